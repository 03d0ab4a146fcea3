"""The Cases workbook round trip: written, edited with openpyxl or saved again by
LibreOffice, and imported all or nothing."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import Engine

from recon.app.cases_cli import case_lines
from recon.config import Settings
from recon.core import cases
from recon.core.calendar import WorkingCalendar
from recon.core.cases import CaseRefused
from recon.core.errors import ConfigError
from recon.report.cases_book import read_edits, write_cases_workbook
from recon.store.cases import apply_edits, list_cases
from recon.store.engine import init_db, make_engine
from tests.builders import payment_row
from tests.conftest import libreoffice
from tests.test_case_store import DAY1, run_date

CAL = WorkingCalendar()
RULES = cases.Rules(approval_threshold=100_000_000, ovo_claim_sla_days=5, calendar=CAL)
TODAY = dt.date(2026, 12, 3)


def _cases(database_url: str, tmp_path: Path) -> tuple[Engine, Path]:
    """Three cases of unknown payments (G1, G2, G3) and their Cases workbook."""
    engine = make_engine(database_url)
    init_db(engine)
    run_date(engine, DAY1, [payment_row(f"G{n}", f"{n}.00", "2026-11-27 03:00:00")
                        for n in (1, 2, 3)])
    lines = case_lines(list_cases(engine, "M001"), Settings(), CAL, TODAY)
    return engine, write_cases_workbook(lines, tmp_path, "cases.xlsx")


def _edit(path: Path, target: Path, changes: dict[int, dict[str, object]]) -> Path:
    book = load_workbook(path)
    sheet = book["Cases"]
    column = {cell.value: cell.column for cell in sheet[1]}
    for row, values in changes.items():
        for title, value in values.items():
            sheet.cell(row, column[title], value)
    book.save(target)
    return target


EDITS = {2: {"State": "ACKNOWLEDGED", "Owner": "budi"},
         3: {"State": "RESOLVED", "Resolution": "records_corrected", "Note": "typo fixed"},
         4: {"Note": "asked OVO"}}


def _states(engine: Engine) -> list[tuple[str, str, str, str, int]]:
    return [(r.case_id, r.state.state, r.state.owner, r.state.note, r.state.version)
            for r in list_cases(engine, "M001", cases.STATES)]


def test_the_sheet_as_written_reads_back(database_url: str, tmp_path: Path) -> None:
    engine, path = _cases(database_url, tmp_path)
    book = load_workbook(path)
    sheet = book["Cases"]
    assert [c.value for c in sheet[1]][:5] == ["Case ID", "First seen", "Age (working days)",
                                               "SLA due", "Overdue"]
    assert [r[0] for r in sheet.iter_rows(min_row=2, values_only=True)] == [
        "M001-000001", "M001-000002", "M001-000003"]
    assert [v.formula1 for v in sheet.data_validations.dataValidation] == [
        f'"{",".join(cases.STATES)}"', f'"{",".join(cases.RESOLUTIONS)}"']
    # Seen on 30 Nov, acknowledgement due 2 Dec: overdue on 3 Dec.
    assert next(sheet.iter_rows(min_row=2, values_only=True))[2:5] == (
        3, dt.datetime(2026, 12, 2), "OVERDUE")
    assert apply_edits(engine, read_edits(path), "ana", RULES) == []  # nothing edited
    engine.dispose()


def test_an_edited_sheet_applies_each_row_as_events(database_url: str, tmp_path: Path) -> None:
    engine, path = _cases(database_url, tmp_path)
    edited = _edit(path, tmp_path / "edited.xlsx", EDITS)
    dry = apply_edits(engine, read_edits(edited), "ana", RULES, dry_run=True)
    assert _states(engine) == [(f"M001-00000{n}", cases.OPEN, "", "", 1) for n in (1, 2, 3)]
    done = apply_edits(engine, read_edits(edited), "ana", RULES)
    assert [(i, e.action, e.to_state) for i, e in done] == [
        (i, e.action, e.to_state) for i, e in dry] == [
        ("M001-000001", cases.ACK, cases.ACKNOWLEDGED),
        ("M001-000002", cases.RESOLVE, cases.RESOLVED),
        ("M001-000003", cases.NOTE, cases.OPEN)]
    assert _states(engine) == [
        ("M001-000001", cases.ACKNOWLEDGED, "budi", "", 2),
        ("M001-000002", cases.RESOLVED, "", "typo fixed", 2),
        ("M001-000003", cases.OPEN, "", "asked OVO", 2)]
    assert {e.source for _, e in done} == {"workbook import"}
    engine.dispose()


@pytest.mark.parametrize(("changes", "said"), [
    ({"Case ID": "M001-999999"}, "row 3: no case M001-999999"),
    ({"Version": 7}, r"row 3 \(M001-000002\): the case changed since the workbook was "
                     r"written \(version 7, now 1\)"),
    ({"State": "APPROVED"}, "State 'APPROVED' is not one of"),
    ({"Resolution": ""}, "a resolution needs its code"),
    ({"State": "OPEN"}, "Resolution changed but State is still OPEN"),
    ({"State": "RAISED_WITH_OVO"}, "recon cases raise sends the claim"),
    ({"State": "REOPENED"}, "cannot reopen a case that is OPEN"),
])
def test_a_bad_row_applies_nothing(database_url: str, tmp_path: Path,
                                   changes: dict[str, object], said: str) -> None:
    """Row 2 is a good edit, row 3 a bad one: neither is applied."""
    engine, path = _cases(database_url, tmp_path)
    edited = _edit(path, tmp_path / "edited.xlsx", {**EDITS, 3: {**EDITS[3], **changes}})
    before = _states(engine)
    with pytest.raises(CaseRefused, match=said):
        apply_edits(engine, read_edits(edited), "ana", RULES)
    assert _states(engine) == before
    engine.dispose()


def test_a_workbook_of_another_shape_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not.xlsx").write_bytes(b"PK not a zip")
    with pytest.raises(ConfigError, match="not a workbook this program can read"):
        read_edits(tmp_path / "not.xlsx")
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Cases"  # type: ignore[union-attr]
    book.active.append(["Case ID", "State"])  # type: ignore[union-attr]
    book.save(tmp_path / "other.xlsx")
    with pytest.raises(ConfigError, match="Cases row 1 has no Owner, Resolution, Note, "
                                          "Version column"):
        read_edits(tmp_path / "other.xlsx")


def test_a_sheet_saved_again_by_libreoffice_imports_the_same(tmp_path: Path) -> None:
    soffice = libreoffice()
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    engine, path = _cases(url, tmp_path)
    edited = _edit(path, tmp_path / "edited.xlsx", EDITS)
    done = subprocess.run([soffice, "--headless", "--norestore", "--convert-to", "xlsx",
                           "--outdir", str(tmp_path / "saved"), str(edited)],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert read_edits(tmp_path / "saved" / "edited.xlsx") == read_edits(edited)
    applied = apply_edits(engine, read_edits(tmp_path / "saved" / "edited.xlsx"), "ana",
                          RULES)
    assert [(i, e.action) for i, e in applied] == [
        ("M001-000001", cases.ACK), ("M001-000002", cases.RESOLVE),
        ("M001-000003", cases.NOTE)]
    engine.dispose()


def test_a_claim_to_ovo_lists_the_cases_and_raises_them(database_url: str,
                                                        tmp_path: Path) -> None:
    """The claim email's attachments read back with the cases' transactions; the cases are
    RAISED_WITH_OVO with the answer due in five working days; a claim that cannot be sent
    raises nothing."""
    import csv
    import io
    from email import message_from_bytes, policy

    from recon.core.cases import ClaimLine
    from recon.core.errors import NotificationFailed
    from recon.report.claims import build_claim_email
    from recon.store.cases import raise_cases

    engine, _ = _cases(database_url, tmp_path)
    sent: list[bytes] = []

    def send(lines: list[ClaimLine], due: dt.date) -> str:
        message = build_claim_email("M001", lines, due, "recon@m.example",
                                    ("claims@ovo.example",), ("team@m.example",))
        sent.append(message.as_bytes())
        return "sent"

    def fail(lines: list[ClaimLine], due: dt.date) -> str:
        raise NotificationFailed("SMTP refused the message")

    at = dt.datetime(2026, 12, 22, 3, 0, tzinfo=dt.UTC)
    with pytest.raises(NotificationFailed):
        raise_cases(engine, ["M001-000001"], "ana", RULES, fail, at=at)
    assert {r.state.state for r in list_cases(engine, "M001")} == {cases.OPEN}
    done, said = raise_cases(engine, ["M001-000001", "M001-000003"], "ana", RULES, send, at=at)
    assert said == "sent"
    assert [(i, e.to_state, e.due_date) for i, e in done] == [
        ("M001-000001", cases.RAISED_WITH_OVO, dt.date(2026, 12, 31)),
        ("M001-000003", cases.RAISED_WITH_OVO, dt.date(2026, 12, 31))]
    message = message_from_bytes(sent[0], policy=policy.default)
    assert (message["To"], message["Cc"]) == ("claims@ovo.example", "team@m.example")
    assert message["Subject"] == "[OVO recon] M001: transaction issue settlement, 2 transactions"
    attached = {a.get_filename().rsplit(".", 1)[1]: a.get_content()
                for a in message.iter_attachments()}
    table = list(csv.reader(io.StringIO(attached["csv"].removeprefix("\ufeff"))))
    assert table[0][:4] == ["Case ID", "MerchantInvoice", "OVOReferenceNo",
                            "Transaction time (WIB)"]
    assert [(r[0], r[1], r[4], r[7]) for r in table[1:]] == [
        ("M001-000001", "G1", "1.00", "MISSING_IN_RECORDS: no payment with partnerReferenceNo G1"),
        ("M001-000003", "G3", "3.00", "MISSING_IN_RECORDS: no payment with partnerReferenceNo G3")]
    sheet = load_workbook(io.BytesIO(attached["xlsx"])).active
    assert [row[:2] for row in sheet.iter_rows(min_row=2, values_only=True)] == [
        ("M001-000001", "G1"), ("M001-000003", "G3")]
    with pytest.raises(CaseRefused, match="cannot raise a case that is RAISED_WITH_OVO"):
        raise_cases(engine, ["M001-000002", "M001-000001"], "ana", RULES, send, at=at)
    assert len(sent) == 1
    engine.dispose()


def test_the_cases_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`recon cases` end to end: list as JSON, act, show the history, a refusal (exit 11,
    one line, nothing applied), export and import, a claim without its address (exit 2)."""
    import json

    from recon.app.cli import main

    url = f"sqlite:///{tmp_path / 'recon.db'}"
    engine, _ = _cases(url, tmp_path)
    engine.dispose()
    monkeypatch.delenv("RECON_CONFIG", raising=False)
    db = ["--database", url]
    assert main(["cases", "list", *db, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["case_id"], r["state"], r["case_key"]) for r in listed] == [
        (f"M001-00000{n}", "OPEN", f"G{n}") for n in (1, 2, 3)]
    assert main(["cases", "ack", "M001-000001", "M001-000002", *db, "--by", "ana"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "M001-000001: OPEN -> ACKNOWLEDGED (ack by ana)",
        "M001-000002: OPEN -> ACKNOWLEDGED (ack by ana)"]
    assert main(["cases", "ack", "M001-000003", "M001-000001", *db, "--by", "ana"]) == 11
    out = capsys.readouterr()
    assert out.err == ("recon: CASE_REFUSED: cannot ack a case that is ACKNOWLEDGED (only one "
                       "that is OPEN or REOPENED)\n")
    assert main(["cases", "list", *db, "--state", "OPEN", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("M001-000003,2026-11-30,")
    assert main(["cases", "show", "M001-000001", *db]) == 0
    shown = capsys.readouterr().out
    assert "system       opened     - -> OPEN  [run 1]" in shown
    assert "ana          ack        OPEN -> ACKNOWLEDGED  [command line]  owner ana" in shown
    assert main(["cases", "export", *db, "--merchant", "M001", "--out", str(tmp_path)]) == 0
    exported = Path(capsys.readouterr().out.strip().rsplit(": ", 1)[1])
    _edit(exported, tmp_path / "edited.xlsx", {4: {"State": "ACKNOWLEDGED"}})
    assert main(["cases", "import", str(tmp_path / "edited.xlsx"), *db, "--by", "budi"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("applied 1 change(s)")
    monkeypatch.delenv("RECON_OVO_CLAIMS_TO", raising=False)
    assert main(["cases", "raise", "M001-000001", *db, "--by", "ana"]) == 2
    assert "ovo_claims_to is not set" in capsys.readouterr().err
