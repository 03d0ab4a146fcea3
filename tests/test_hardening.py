"""Hostile files and operator faults, through real `recon` processes on every database:
the right exit code, one stderr line, the database as it was on failure, every line
accounted for on success, nothing written outside the configured folders."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from recon.core.calendar import WIB
from recon.formats.filegen import write_settlement_csv, write_settlement_xlsx
from recon.store.engine import init_db, make_engine
from recon.store.records import insert_records
from recon.store.tables import metadata, recon_exceptions

DAY = "2026-11-30"
NAME = "OVO_SETTLEMENT_M001_20261130"
ROW = {"SettlementDate": DAY, "TransactionDateTime": "2026-11-27 10:00:00",
       "MerchantID": "M001", "OVOReferenceNo": "OVO1", "TransactionType": "PAYMENT",
       "PaymentSource": "OVO Cash", "GrossAmount": "10000.00", "MDRAmount": "70.00",
       "TaxAmount": "7.70", "NetAmount": "9922.30"}
ROWS = 30


def rows(**changes: dict[str, str]) -> list[dict[str, str]]:
    """ROWS payment rows INV-0.. ; `changes` maps an index (as 'i3') to changed fields."""
    made = []
    for i in range(ROWS):
        made.append({**ROW, "MerchantInvoice": f"INV-{i}", **changes.get(f"i{i}", {})})
    return made


def dump(url: str) -> list[tuple[str, list[tuple[object, ...]]]]:
    """Every table's rows, in a stable order: what 'the database as it was' compares."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [(t.name, sorted((tuple(map(str, r)) for r in conn.execute(select(t))),
                                    key=str))
                    for t in metadata.sorted_tables]
    finally:
        engine.dispose()


class Site:
    """One merchant's installation: database with 30 payments, inbox, output folders."""

    def __init__(self, root: Path, url: str, api: str) -> None:
        self.root, self.url = root, url
        self.inbox = root / "inbox"
        self.inbox.mkdir()
        self.out = root / "out"
        engine = make_engine(url)
        init_db(engine)
        insert_records(engine, [{
            "partner_reference_no": f"INV-{i}", "reference_no": "OVO1", "merchant_id": "M001",
            "amount": Decimal("10000.00"), "pay_option": "OVO_CASH", "status": "00",
            "transaction_time": dt.datetime(2026, 11, 27, 10, tzinfo=WIB)}
            for i in range(ROWS)])
        engine.dispose()
        self.env = {**os.environ, "PREFECT_API_URL": api,
                    "RECON_ARCHIVE_DIR": str(self.out / "archive"),
                    "RECON_SPILL_DIR": str(self.out / "spill")}

    def recon(self, *args: str, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "recon.app.cli", *args], cwd=self.root,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def run(self, *extra: str, env: dict[str, str] | None = None,
            day: str = DAY) -> subprocess.CompletedProcess[str]:
        return self.recon("run", "--date", day, "--merchant", "M001", "--database", self.url,
                          "--source", str(self.inbox), "--report-dir",
                          str(self.out / "reports"), "--outbox", str(self.out / "outbox"),
                          *extra, env=env)

    def summary(self) -> dict[str, object]:
        path = self.out / "reports/M001" / DAY / "summary.json"
        return dict(json.loads(path.read_text()))

    def files_outside(self) -> list[Path]:
        """Files written anywhere under the site but its inbox, output folders and db."""
        allowed = (self.inbox, self.out)
        return [p for p in self.root.rglob("*") if p.is_file()
                and not any(a in p.parents for a in allowed) and p.suffix != ".db"
                and not p.name.startswith("recon.db")]


@pytest.fixture
def site(tmp_path: Path, database_url: str, prefect_api: str) -> Site:
    return Site(tmp_path, database_url, prefect_api)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:] + done.stdout[-3000:]
    return lines[0]


# ------------------------------------------------------------------- hostile files


def stray_quote(at: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        return data.replace(f",INV-{at},".encode(), f',"INV-{at},'.encode(), 1)
    return edit


def _rewrite_sheet(path: Path, change: Callable[[str], str]) -> None:
    """The XLSX at `path` with its sheet's XML changed by `change`."""
    with zipfile.ZipFile(path) as source:
        parts = {info.filename: source.read(info) for info in source.infolist()}
    sheet = next(name for name in parts if name.startswith("xl/worksheets/sheet"))
    parts[sheet] = change(parts[sheet].decode()).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)


def _xlsx_declaring_whole_sheet(path: Path) -> None:
    """A valid sheet whose declared dimension is A1:XFD1048576, with empty rows after."""
    write_settlement_xlsx(rows(), path)
    empty = "".join(f'<row r="{r}"/>' for r in range(40, 20000))
    _rewrite_sheet(path, lambda xml: xml.replace(
        '<dimension ref="A1:M32"/>', '<dimension ref="A1:XFD1048576"/>').replace(
        "</sheetData>", empty + "</sheetData>"))


def _xlsx_bomb(path: Path) -> None:
    """An XLSX whose sheet expands a thousandfold (a zip bomb, kept small here)."""
    write_settlement_xlsx(rows(), path)
    _rewrite_sheet(path, lambda xml: xml.replace("</sheetData>",
                                                 " " * (40 << 20) + "</sheetData>"))


REJECTED = {
    "stray quote in the middle": (stray_quote(5), "line 7: a quoted field opens here"),
    "stray quote before the trailer": (stray_quote(28), "line 30: a quoted field opens here"),
    "stray quote in the last row": (
        lambda data: data.rsplit(b"\nTOTAL", 1)[0].replace(b",INV-29,", b',"INV-29,') + b"\n",
        "line 31: a quoted field opens here and is never closed"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_stray_quote_rejects_the_file_and_writes_nothing(site: Site, case: str) -> None:
    edit, said = REJECTED[case]
    path = write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    path.write_bytes(edit(path.read_bytes()))
    before = dump(site.url)
    done = site.run()
    assert done.returncode == 5, done.stdout[-2000:]
    line = one_line(done)
    assert line.startswith(f"recon: FILE_REJECTED: {NAME}.csv: {said}"), line
    assert dump(site.url) == before
    assert not (site.out / "reports/M001" / DAY).exists()
    (alert,) = (site.out / "outbox").glob("alert_M001_*.eml")
    assert "cannot be trusted" in alert.read_text()


ROW_FAULTS = {
    "MerchantInvoice of 65 characters": {"MerchantInvoice": "X" * 65},
    "MerchantInvoice of 129 characters": {"MerchantInvoice": "Y" * 129},
    "MerchantInvoice over csv's field limit": {"MerchantInvoice": "Z" * 140_000},
    "a NUL byte in MerchantInvoice": {"MerchantInvoice": "INV-\x00-3"},
    "a NUL byte in OVOReferenceNo": {"OVOReferenceNo": "OVO\x001"},
    "RefundInvoice with a line feed": {"RefundInvoice": "R\n1"},
}


def test_bad_keys_are_invalid_rows_alike_on_every_database(site: Site) -> None:
    """One file, a fault per row (rows 3 to 8): the same summary on SQLite, PostgreSQL and
    MariaDB, each bad row an INVALID_ROW naming its field, nothing lost."""
    faults = {f"i{3 + n}": fields for n, fields in enumerate(ROW_FAULTS.values())}
    path = write_settlement_csv(rows(**faults), site.inbox / f"{NAME}.csv")
    done = site.run()
    assert done.returncode == 0, done.stderr[-3000:]
    counts = site.summary()["counts"]
    assert isinstance(counts, dict)
    bad = len(ROW_FAULTS)
    assert counts["INVALID_ROW"] == bad and counts["MATCHED"] == ROWS - bad
    assert counts["MISSING_IN_SETTLEMENT"] == bad  # their payments: the rows were unreadable
    assert sum(counts[c] for c in counts if c != "MISSING_IN_SETTLEMENT") == ROWS
    engine = make_engine(site.url)
    with engine.connect() as conn:
        reasons = dict(conn.execute(select(recon_exceptions.c.line_no, recon_exceptions.c.reason)
                                    .where(recon_exceptions.c.category == "INVALID_ROW")).all())
    engine.dispose()
    for n, (case, fields) in enumerate(ROW_FAULTS.items()):  # row i3 is on line 5
        header = next(iter(fields))  # the file's column, as its reason names it
        assert reasons[5 + n].startswith(header), (case, reasons[5 + n])
    assert path.exists() and site.files_outside() == []


def test_an_xlsx_with_a_whole_sheet_declared_reads_its_rows(site: Site) -> None:
    _xlsx_declaring_whole_sheet(site.inbox / f"{NAME}.xlsx")
    done = site.run()
    assert done.returncode == 0, done.stderr[-3000:]
    counts = site.summary()["counts"]
    assert isinstance(counts, dict) and counts["MATCHED"] == ROWS


def test_an_xlsx_bomb_is_rejected_before_it_is_expanded(site: Site) -> None:
    _xlsx_bomb(site.inbox / f"{NAME}.xlsx")
    before = dump(site.url)
    done = site.run()
    assert done.returncode == 5
    assert "expands" in one_line(done) and "max_xlsx_ratio" in one_line(done)
    assert dump(site.url) == before


def test_a_file_over_max_file_bytes_is_rejected(site: Site) -> None:
    write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    done = site.run(env={"RECON_MAX_FILE_BYTES": "1000"})
    assert done.returncode == 5
    assert "over max_file_bytes (1,000)" in one_line(done)


# ------------------------------------------------------------ faults around the write


def test_an_unwritable_report_folder_changes_nothing(site: Site) -> None:
    """Run as root here, so 'unwritable' is a file where the report folder should be."""
    write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    assert site.run().returncode == 0
    before = dump(site.url)
    published = sorted(p.name for p in (site.out / "reports/M001" / DAY).iterdir())
    write_settlement_csv(rows(i4={"GrossAmount": "1.00"}), site.inbox / f"{NAME}.csv")
    blocked = site.root / "blocked"
    blocked.write_text("not a folder")
    done = site.run("--report-dir", str(blocked))
    assert done.returncode == 10, done.stdout[-2000:]
    assert one_line(done).startswith("recon: OUTPUT_UNWRITABLE: ")
    assert dump(site.url) == before
    assert sorted(p.name for p in (site.out / "reports/M001" / DAY).iterdir()) == published


def test_an_unwritable_outbox_saves_the_results_and_exits_7(site: Site) -> None:
    write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    (site.out).mkdir(exist_ok=True)
    (site.out / "outbox").write_text("not a folder")
    done = site.run()
    assert done.returncode == 7, done.stdout[-2000:]
    line = one_line(done)
    assert line.startswith("recon: NOTIFY_FAILED: the outbox")
    assert f"recon notify --date {DAY} --merchant M001" in line
    assert site.summary()["counts"] == {**site.summary()["counts"], "MATCHED": ROWS}


def test_an_unwritable_archive_folder_fetches_nothing_and_exits_10(site: Site) -> None:
    write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    blocked = site.root / "archive-is-a-file"
    blocked.write_text("not a folder")
    before = dump(site.url)
    done = site.run(env={"RECON_ARCHIVE_DIR": str(blocked)})
    assert done.returncode == 10, done.stdout[-2000:]
    assert one_line(done).startswith("recon: OUTPUT_UNWRITABLE: the archive folder ")
    assert dump(site.url) == before


def test_amounts_that_cannot_be_added_exactly_reject_the_file(site: Site) -> None:
    huge = {"GrossAmount": "999999999999999.99", "MDRAmount": "0", "TaxAmount": "0",
            "NetAmount": "999999999999999.99"}
    made = [{**row, "MerchantInvoice": f"INV-{i}", **huge} for i, row in enumerate(rows() * 4)]
    write_settlement_csv(made, site.inbox / f"{NAME}.csv", trailer=False)
    before = dump(site.url)
    done = site.run()
    assert done.returncode == 5
    assert "past what can be added exactly" in one_line(done)
    assert dump(site.url) == before


# -------------------------------------------------------------- names and folders


@pytest.mark.parametrize("merchant", ["../../x", "../x", "M 1", "a" * 33])
def test_a_merchant_id_that_is_not_a_name_is_refused(tmp_path: Path, prefect_api: str,
                                                     merchant: str) -> None:
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", prefect_api)
    write_settlement_csv(rows(), site.inbox / f"OVO_SETTLEMENT_{merchant}_20261130.csv"
                         if "/" not in merchant else site.inbox / "x.csv")
    done = site.recon("run", "--date", DAY, "--merchant", merchant, "--database", site.url,
                      "--source", str(site.inbox), "--report-dir", str(site.out / "r"),
                      "--outbox", str(site.out / "o"))
    assert done.returncode == 2
    assert "is not a valid merchant ID" in one_line(done)
    assert site.files_outside() == [] and not (site.out).exists()


def test_a_file_name_with_a_line_feed_never_reaches_the_disk(tmp_path: Path,
                                                             prefect_api: str) -> None:
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", prefect_api)
    write_settlement_csv(rows(), site.inbox / "OVO_SETTLEMENT_M0\n01_20261130.csv")
    done = site.recon("run", "--date", DAY, "--database", site.url, "--source",
                      str(site.inbox), "--report-dir", str(site.out / "r"), "--outbox",
                      str(site.out / "o"))
    assert done.returncode == 4
    assert not (site.out / "archive").exists()
    for mail in (site.out / "o").glob("*.eml"):
        assert "\n01_" not in mail.read_text()


# ------------------------------------------------------------------ leftovers


def test_a_killed_runs_staging_and_parts_are_removed_by_the_next_run(site: Site) -> None:
    write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    staging = site.out / "reports/M001" / f".{DAY}.staging-deadbeef"
    parts = site.out / "spill" / "M001_20261130_deadbeef"
    other = site.out / "spill" / "M001_20261201_cafef00d"  # another date's: not ours
    for folder in (staging, parts, other):
        folder.mkdir(parents=True)
        (folder / "left.bin").write_bytes(b"x")
    done = site.run()
    assert done.returncode == 0, done.stderr[-2000:]
    assert not staging.exists() and not parts.exists() and other.exists()
    assert "left behind by an earlier run" in done.stdout


# ------------------------------------------------------- operator mistakes, up front


def test_operator_mistakes_are_found_before_prefect_starts(tmp_path: Path,
                                                           prefect_api: str) -> None:
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", prefect_api)
    write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    new_db = tmp_path / "new" / "fresh.db"
    cases = {
        "a database that does not exist": (
            ["--database", f"sqlite:///{new_db}"], "recon init-db --database"),
        "a database URL that is not one": (["--database", "not-a-url"], "is not valid"),
        "a source folder that does not exist": (
            ["--source", str(tmp_path / "inbx")], "source folder"),
        "an unknown merchant": (["--merchant", "M009"], "unknown merchant M009"),
    }
    for case, (options, said) in cases.items():
        args = ["run", "--date", DAY, "--merchant", "M001", "--database", site.url,
                "--source", str(site.inbox), "--report-dir", str(site.out / "reports"),
                "--outbox", str(site.out / "outbox")]
        for i in range(0, len(options), 2):
            args[args.index(options[i]) + 1] = options[i + 1]
        done = site.recon(*args)
        assert done.returncode == 2, (case, done.stderr)
        assert said in one_line(done), case
        assert "Beginning flow run" not in done.stdout, case
    assert not new_db.exists() and not new_db.parent.exists()
    assert not (site.out / "outbox").exists()  # no alert for an operator's mistake


def test_an_unreachable_database_server_is_a_database_error(site: Site) -> None:
    done = site.run("--database", "postgresql://nobody@127.0.0.1:1/none")
    assert done.returncode == 8
    assert one_line(done).startswith("recon: DATABASE: ")


def test_an_unknown_configuration_key_names_the_closest(tmp_path: Path) -> None:
    config = tmp_path / "recon.toml"
    config.write_text('[recon]\nmail_too = ["a@example.com"]\n')
    done = subprocess.run([sys.executable, "-m", "recon.app.cli", "init-db", "--config",
                           str(config), "--database", f"sqlite:///{tmp_path / 'x.db'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown key 'mail_too' (did you mean 'mail_to'?)" in done.stderr


# ------------------------------------------------------------------------ alerts


def test_alerts_go_to_alert_to_in_words_without_commands(site: Site) -> None:
    done = site.run(env={"RECON_ALERT_TO": "ops-finance@example.com"})
    assert done.returncode == 4
    (alert,) = (site.out / "outbox").glob("alert_M001_*.eml")
    text = alert.read_text()
    assert "To: ops-finance@example.com" in text
    assert "had not arrived" in text and "What to expect:" in text
    assert "recon run" not in text
    assert f"recon run --date {DAY} --merchant M001" in done.stdout  # the operator's log


# ------------------------------------------------------------------------ locks


def _lock_row(url: str, holder: str, age_seconds: float) -> None:
    from sqlalchemy import insert

    from recon.store.tables import recon_locks

    beat = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_seconds)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(recon_locks).values(
            merchant_id="M001", settlement_date=dt.date(2026, 11, 30), holder=holder,
            acquired_at=beat, heartbeat_at=beat))
    engine.dispose()


def test_a_lock_from_another_host_is_taken_over_once_its_heartbeat_is_stale(
        tmp_path: Path, prefect_api: str) -> None:
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", prefect_api)
    write_settlement_csv(rows(), site.inbox / f"{NAME}.csv")
    _lock_row(site.url, "old-container-7f3a:4242", age_seconds=120)
    held = site.run(env={"RECON_LOCK_WAIT_SECONDS": "1", "RECON_LOCK_STALE_SECONDS": "600"})
    assert held.returncode == 6 and "RUN_LOCKED" in one_line(held)
    refused = site.recon("unlock", "--date", DAY, "--merchant", "M001", "--database",
                         site.url, env={"RECON_LOCK_STALE_SECONDS": "600"})
    assert refused.returncode == 6
    assert "held by old-container-7f3a:4242, which may be alive" in one_line(refused)
    done = site.run(env={"RECON_LOCK_WAIT_SECONDS": "1", "RECON_LOCK_STALE_SECONDS": "60"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "taking over the lock of M001 2026-11-30 from old-container-7f3a:4242" in done.stdout
    assert dump(site.url)[[t.name for t in metadata.sorted_tables].index("recon_locks")][1] == []


def test_unlock_releases_a_dead_runs_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'recon.db'}"
    engine = make_engine(url)
    init_db(engine)
    engine.dispose()
    _lock_row(url, "gone-host:1", age_seconds=3600)
    done = subprocess.run([sys.executable, "-m", "recon.app.cli", "unlock", "--date", DAY,
                           "--merchant", "M001", "--database", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "released the lock of M001 2026-11-30 held by gone-host:1" in done.stdout
    again = subprocess.run([sys.executable, "-m", "recon.app.cli", "unlock", "--date", DAY,
                            "--merchant", "M001", "--database", url],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "no run holds the lock" in again.stdout


@pytest.mark.postgres
def test_unlock_on_a_server_says_its_locks_end_with_their_session(
        postgres_server_url: str) -> None:
    engine = make_engine(postgres_server_url)
    init_db(engine)
    engine.dispose()
    done = subprocess.run([sys.executable, "-m", "recon.app.cli", "unlock", "--date", DAY,
                           "--merchant", "M001", "--database", postgres_server_url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "server locks end with their session" in done.stdout
