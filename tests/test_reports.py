"""The workbook, summary.json and the email, read back as their readers would."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
from email import message_from_bytes, policy
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from python_calamine import CalamineWorkbook

from recon.core import categories as cat
from recon.core.match import match_settlement
from recon.report.mail import build_alert_email, build_report_email, report_subject, write_to_outbox
from recon.report.summary import build_summary, write_summary
from recon.report.workbook import write_exception_workbook
from tests.builders import (
    context,
    ledger_frame,
    open_items_frame,
    payment_row,
    payments_frame,
    refund_row,
    refunds_frame,
    rows_frame,
)
from tests.conftest import libreoffice

INJECTIONS = ["=HYPERLINK(\"http://x\",\"y\")", "+SUM(1,2)", "-2+3", "@SUM(A1)", "000123"]


@pytest.fixture
def result():
    rows = [payment_row("INV-1", "10000.00"), payment_row("INV-1", "10000.00"),
            payment_row("INV-2", "9000.00"), refund_row("INV-1", "500.00", "RF-1"),
            *[payment_row(text, "1.00") for text in INJECTIONS],
            payment_row("INV-3", "1.00", invalid_reason="GrossAmount 'x' is not a decimal")]
    payments = [("INV-1", "10000.00", "00", "2026-11-27 10:00"),
                ("INV-2", "10000.00", "00", "2026-11-27 11:00"),
                ("INV-9", "777.00", "00", "2026-11-28 11:00")]
    refunds = [("RF-1", "INV-1", "OVR-1", "400.00", "00", "2026-11-28 10:00")]
    opened = open_items_frame([(7, dt.date(2026, 11, 20), "PAYMENT", "OLD-1", "50.00")])
    return match_settlement(rows_frame(rows), payments_frame(payments), refunds_frame(refunds),
                            ledger_frame([]), opened, context())


@pytest.fixture
def summary(result):
    return build_summary(result, "OVO_SETTLEMENT_M001_20261130.csv", "ab" * 32, "csv (,)", False)


def test_summary_json(result, summary, tmp_path: Path) -> None:
    path = write_summary(summary, tmp_path / "summary.json")
    data = json.loads(path.read_text())
    assert set(data["counts"]) == set(cat.ALL_CATEGORIES)
    assert data["counts"][cat.MISSING_IN_RECORDS] == len(INJECTIONS)
    assert data["counts"][cat.MISSING_IN_SETTLEMENT] == 1
    assert data["amounts"][cat.MISSING_IN_SETTLEMENT] == "777.00"
    assert data["amounts"][cat.REFUND_MISMATCH] == "-500.00"
    assert data["file"] == {"name": "OVO_SETTLEMENT_M001_20261130.csv", "sha256": "ab" * 32,
                            "rows": 10, "format": "csv (,)", "trailer": False}
    assert data["covered_transaction_dates"] == ["2026-11-27", "2026-11-28", "2026-11-29"]
    assert data["open_items"] == 1
    assert data["totals"]["gross"] == "28506.00"  # 10000 × 2 + 9000 − 500 + 6 × 1


def test_workbook_layout_values_and_types(result, summary, tmp_path: Path) -> None:
    path = write_exception_workbook(result, summary, tmp_path / "recon_M001_20261130.xlsx")
    book = load_workbook(path)
    expected_sheets = ["Summary", *cat.EXCEPTION_CATEGORIES, "Open items", "Refund deltas"]
    assert book.sheetnames == expected_sheets
    for name in cat.EXCEPTION_CATEGORIES:
        sheet = book[name]
        assert sheet.freeze_panes == "A2"
        assert sheet.auto_filter.ref.startswith("A1:")
        data_rows = sheet.max_row - 1
        if result.counts[name] == 0:
            assert sheet["A2"].value == "none"
        else:
            assert data_rows == result.counts[name], name
    for sheet in book.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", f"formula in {sheet.title}!{cell.coordinate}"
    missing = book[cat.MISSING_IN_RECORDS]
    invoices = [missing.cell(row=r, column=3).value for r in range(2, missing.max_row + 1)]
    assert sorted(invoices) == sorted(INJECTIONS)
    amount = book[cat.AMOUNT_MISMATCH]
    assert amount["H1"].value == "GrossAmount"
    assert amount["H2"].value == 9000 and amount["H2"].number_format == "#,##0.00"
    assert isinstance(amount["G2"].value, dt.datetime)
    assert amount["G2"].value == dt.datetime(2026, 11, 27, 10, 0)  # WIB wall time
    assert amount["M2"].value == "MerchantInvoice"
    assert amount["Q2"].value == -1000
    open_items = book["Open items"]
    # Oldest first: the earlier item (age 6, past the 3-day threshold, highlighted), then
    # this date's own missing payment (age 0).
    assert [open_items.cell(row=r, column=3).value for r in (2, 3)] == ["OLD-1", "INV-9"]
    assert [open_items.cell(row=r, column=6).value for r in (2, 3)] == [6, 0]
    assert open_items["A2"].fill.fgColor.rgb.endswith("F8CBAD")
    assert open_items["A3"].fill.fgColor.rgb in (None, "00000000")
    deltas = book["Refund deltas"]
    assert [c.value for c in deltas[2]] == ["INV-1", 10000, 400, 500, 100, "RF-1", "5"]
    assert deltas["E2"].font.bold
    summary_sheet = book["Summary"]
    labels = {r[0].value: r for r in summary_sheet.iter_rows() if r[0].value}
    assert labels["GROSS"][1].value == 28506
    assert labels["GROSS"][2].value == 10000 + 10000 - 400 + 777  # paid covered − done refunds
    assert labels["GROSS"][3].value == 28506 - 20377
    assert labels["MDR"][2].value == 70 + 70 + 5.44  # 0.7% of each paid payment
    assert len(summary_sheet._charts) == 1


def test_workbook_reads_back_with_an_independent_reader(result, summary, tmp_path: Path) -> None:
    path = write_exception_workbook(result, summary, tmp_path / "recon_M001_20261130.xlsx")
    book = CalamineWorkbook.from_path(str(path))
    assert book.sheet_names[0] == "Summary"
    rows = book.get_sheet_by_name(cat.MISSING_IN_RECORDS).to_python()
    assert {r[2] for r in rows[1:]} == set(INJECTIONS)
    summary_rows = book.get_sheet_by_name("Summary").to_python()
    table = {r[0]: r[1] for r in summary_rows if r and r[0] in cat.ALL_CATEGORIES}
    assert table == {k: float(v) for k, v in result.counts.items()}


def test_report_email(result, summary, tmp_path: Path) -> None:
    workbook = write_exception_workbook(result, summary, tmp_path / "recon_M001_20261130.xlsx")
    message = build_report_email(summary, workbook, "recon@m.example", ("team@ovo.example",),
                                 ("finance@m.example",))
    path = write_to_outbox(message, tmp_path / "outbox", "recon_M001_20261130")
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    written = summary.to_dict()
    exceptions, amount = written["exceptions"], written["exception_amount"]
    assert parsed["Subject"] == (f"[OVO recon] M001 2026-11-30: {exceptions} exceptions, "
                                 f"IDR {int(amount.split('.')[0]):,}.00")
    assert parsed["To"] == "team@ovo.example" and parsed["Cc"] == "finance@m.example"
    plain = parsed.get_body(("plain",)).get_content()
    assert "MISSING_IN_SETTLEMENT" in plain and "2026-11-27, 2026-11-28, 2026-11-29" in plain
    assert parsed.get_body(("html",)) is not None
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_filename() == "recon_M001_20261130.xlsx"
    assert attachment.get_content_type() == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    assert load_workbook(BytesIO(attachment.get_content())).sheetnames[0] == "Summary"


def test_all_clear_subject(summary) -> None:
    clear = dataclasses.replace(summary, exceptions=0)
    assert report_subject(clear) == "[OVO recon] M001 2026-11-30: all clear"


def test_alert_email(tmp_path: Path) -> None:
    message = build_alert_email("M001", dt.date(2026, 11, 30), "FILE_REJECTED",
                                "f.csv: file is empty", "a@b", ("c@d",))
    assert "ALERT" in message["Subject"]
    body = message.get_content()
    assert "file is empty" in body
    assert "Monday 30 November 2026, arrived but cannot be trusted as a whole" in body
    assert "What to expect: Nothing from this file was recorded." in body
    assert "recon " not in body  # the command is for the operator's log
    failed = build_alert_email("M001", dt.date(2026, 11, 30), "DATABASE", "db down", "a@b",
                               ("c@d",)).get_content()
    assert "could not be reconciled: the run failed" in failed


def test_trend_chart_when_earlier_runs_exist(result, summary, tmp_path: Path) -> None:
    import pandas as pd

    history = pd.DataFrame({"settlement_date": [dt.date(2026, 11, 27), dt.date(2026, 11, 30)],
                            "exceptions": [3, 9], "file_rows": [100, 120]})
    path = write_exception_workbook(result, summary, tmp_path / "r.xlsx", history)
    sheet = load_workbook(path)["Summary"]
    assert len(sheet._charts) == 2
    dates = [r[0].value for r in sheet.iter_rows() if isinstance(r[0].value, dt.datetime)]
    assert dates[-2:] == [dt.datetime(2026, 11, 27), dt.datetime(2026, 11, 30)]


def test_a_category_beyond_the_row_limit_continues_in_csv(result, summary,
                                                           tmp_path: Path) -> None:
    from recon.report.workbook import WorkbookOptions

    path = write_exception_workbook(result, summary, tmp_path / "recon_M001_20261130.xlsx",
                                    options=WorkbookOptions(max_rows=4))
    sheet = load_workbook(path)[cat.MISSING_IN_RECORDS]
    assert sheet["A1"].value == ("5 rows: the first 2 are here, the other 3 continue in "
                                 "recon_M001_20261130_MISSING_IN_RECORDS.csv")
    assert sheet["A2"].value == "Line" and sheet.freeze_panes == "A3"
    assert sheet.max_row == 4
    with (tmp_path / "recon_M001_20261130_MISSING_IN_RECORDS.csv").open(newline="") as handle:
        spilled = list(csv.reader(handle))
    assert spilled[0][:3] == ["Line", "Type", "MerchantInvoice"] and len(spilled) == 1 + 3
    in_csv = [row[2] for row in spilled[1:]]
    # A text a spreadsheet would evaluate is quoted in the CSV: "'=...", "'+...".
    assert not any(value.startswith(("=", "+", "-", "@")) for value in in_csv)
    unquoted = {v[1:] if v.startswith("'") else v for v in in_csv}
    shown = {sheet.cell(row=r, column=3).value for r in (3, 4)}
    assert shown | unquoted == set(INJECTIONS)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.one_of(st.none(), st.text(alphabet=st.sampled_from(list("ab ,\"'\r\n\t=+-@é€0"))),
              st.sampled_from(["", "=1+1", "\t", "a,b", 'say "x"'])),
    st.one_of(st.none(), st.integers(-10**15, 10**15)),
    st.integers(-10**9, 10**9),
    st.one_of(st.none(), st.integers(0, 4_102_444_800 * 10**9)),  # ns since 1970, to 2100
    st.one_of(st.none(), st.dates(dt.date(1970, 1, 1), dt.date(2199, 12, 31)))),
    max_size=40), st.integers(1, 7))
def test_the_csv_overflow_is_what_python_s_csv_writes(tmp_path_factory: Any,
                                                       rows: list[tuple[Any, ...]],
                                                       batch: int) -> None:
    """Every kind of column, written by Arrow a batch at a time, byte for byte as Python's
    `csv` writes the rows of the cells' Python values (a formula-like text quoted)."""
    import warnings

    import pandas as pd

    from recon.report import workbook
    from recon.report.workbook import Col, FrameRows, cell_values, spill_rows

    cols = [Col("Text, quoted", "text"), Col("Money", "money", "money"),
            Col("Line", "int", "int"), Col("Time", "time", "time"),
            Col("Date", "date", "date")]
    frame = pd.DataFrame({
        "text": pd.Series([r[0] for r in rows], dtype="str"),
        "money": pd.array([r[1] for r in rows], dtype="Int64"),
        "int": pd.Series([r[2] for r in rows], dtype="int64"),
        "time": pd.to_datetime(pd.Series([r[3] for r in rows], dtype="Int64"), unit="ns",
                               utc=True),
        "date": pd.Series([r[4] for r in rows], dtype="object"),
    })
    expected = BytesIO()
    with warnings.catch_warnings():  # a time's nanoseconds, dropped as the CSV drops them
        warnings.simplefilter("ignore")
        columns = [cell_values(frame, c) for c in cols]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([c.title for c in cols])
    for values in zip(*columns, strict=True):
        writer.writerow(["" if v is None else "'" + v if c.kind == "text" and v[:1] in
                         workbook.FORMULA_STARTS else v for c, v in zip(cols, values,
                                                                        strict=True)])
    expected.write(text.getvalue().encode("utf-8"))
    path = tmp_path_factory.mktemp("csv") / "overflow.csv"
    spill_rows(path, cols, FrameRows(frame).chunks(0, len(frame), batch))
    assert path.read_bytes() == expected.getvalue()


def test_libreoffice_converts_the_workbook(result, summary, tmp_path: Path) -> None:
    import os
    import subprocess

    soffice = libreoffice()
    path = write_exception_workbook(result, summary, tmp_path / "recon_M001_20261130.xlsx")
    done = subprocess.run([soffice, "--headless", "--norestore", "--convert-to", "pdf",
                           "--outdir", str(tmp_path / "pdf"), str(path)],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    pdf = tmp_path / "pdf" / "recon_M001_20261130.pdf"
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF")
