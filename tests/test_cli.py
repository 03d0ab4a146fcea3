"""The command line as operators and scripts use it: real `recon` processes."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from recon.core.calendar import WIB
from recon.formats.filegen import HEADER, write_settlement_csv, write_settlement_xlsx
from recon.store.engine import init_db, make_engine
from recon.store.records import insert_records

NAME = "OVO_SETTLEMENT_M001_20261130"
ROW = {"SettlementDate": "2026-11-30", "TransactionDateTime": "2026-11-27 10:00:00",
       "MerchantID": "M001", "MerchantInvoice": "INV-1", "OVOReferenceNo": "OVO1",
       "TransactionType": "PAYMENT", "PaymentSource": "OVO Cash", "GrossAmount": "10000.00",
       "MDRAmount": "70.00", "TaxAmount": "7.70", "NetAmount": "9922.30"}


class Workspace:
    def __init__(self, root: Path, api_url: str) -> None:
        self.root = root
        self.db = root / "recon.db"
        self.inbox = root / "inbox"
        self.inbox.mkdir()
        self.outbox = root / "outbox"
        self.env = {**os.environ, "PREFECT_API_URL": api_url,
                    "RECON_ARCHIVE_DIR": str(root / "archive")}
        engine = make_engine(f"sqlite:///{self.db}")
        init_db(engine)
        insert_records(engine, [{
            "partner_reference_no": "INV-1", "reference_no": "OVO1", "merchant_id": "M001",
            "amount": Decimal("10000.00"), "pay_option": "OVO_CASH", "status": "00",
            "transaction_time": dt.datetime(2026, 11, 27, 10, tzinfo=WIB)}])
        engine.dispose()

    def recon(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recon.app.cli", *args], cwd=self.root, env=self.env,
            capture_output=True, text=True, timeout=300)

    def run(self, day: str = "2026-11-30", *extra: str) -> subprocess.CompletedProcess[str]:
        return self.recon("run", "--date", day, "--merchant", "M001", "--database",
                          f"sqlite:///{self.db}", "--source", str(self.inbox), "--report-dir",
                          str(self.root / "reports"), "--outbox", str(self.outbox), *extra)

    def snapshot(self) -> str:
        with sqlite3.connect(self.db) as conn:
            return "\n".join(conn.iterdump())


@pytest.fixture
def workspace(tmp_path: Path, prefect_api: str) -> Workspace:
    return Workspace(tmp_path, prefect_api)


def test_init_db_is_safe_to_repeat(workspace: Workspace) -> None:
    url = f"sqlite:///{workspace.root / 'fresh.db'}"
    first = workspace.recon("init-db", "--database", url)
    assert first.returncode == 0, first.stderr
    assert "created ovo_payments" in first.stdout
    second = workspace.recon("init-db", "--database", url)
    assert second.returncode == 0 and "already exist" in second.stdout


def test_run_reconciles_and_exits_zero(workspace: Workspace) -> None:
    write_settlement_csv([ROW], workspace.inbox / f"{NAME}.csv")
    done = workspace.run()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "MATCHED" in done.stdout and "summary.json" in done.stdout
    assert (workspace.root / "reports/M001/2026-11-30/summary.json").exists()
    assert (workspace.root / "reports/M001/2026-11-30/recon_M001_20261130.xlsx").exists()
    assert list(workspace.outbox.glob("recon_M001_20261130_*.eml"))


def test_run_in_parts_on_disk_reconciles_as_the_whole_run(workspace: Workspace) -> None:
    """`--parts N`: the same table and reports; the run's parts are removed at its end."""
    write_settlement_csv([ROW, {**ROW, "MerchantInvoice": "GHOST"}],
                         workspace.inbox / f"{NAME}.csv")
    whole = workspace.run()
    assert whole.returncode == 0, whole.stderr
    in_parts = workspace.run("2026-11-30", "--parts", "2")
    assert in_parts.returncode == 0, in_parts.stderr
    assert in_parts.stderr == ""

    def table(out: str) -> str:
        return out[out.index("\nMerchant M001"):out.index("Open items")]

    assert table(whole.stdout) == table(in_parts.stdout)
    assert "MISSING_IN_RECORDS" in table(whole.stdout)
    assert "rows in 2 parts on disk" in in_parts.stdout  # the read step's line
    assert list((workspace.root / "var" / "spill").iterdir()) == []
    refused = workspace.run("2026-11-30", "--parts", "-1")
    assert refused.returncode != 0 and "parts: must not be negative" in refused.stderr


def _write(workspace: Workspace, kind: str) -> str:
    csv_path = workspace.inbox / f"{NAME}.csv"
    if kind == "empty":
        csv_path.write_bytes(b"")
    elif kind == "undecodable":
        csv_path.write_bytes(",".join(HEADER).encode() + b"\n\xff\xfe\xfa\n")
    elif kind == "missing column":
        csv_path.write_text("SettlementDate,MerchantInvoice\n2026-11-30,INV-1\n")
    elif kind == "trailer":
        write_settlement_csv([ROW], csv_path, trailer=False)
        with csv_path.open("a") as handle:
            handle.write("TOTAL,1,99999.00,9922.30\n")
    elif kind == "settlement date":
        write_settlement_csv([{**ROW, "SettlementDate": "2026-11-27"}], csv_path)
    elif kind == "header only":
        csv_path.write_text(",".join(HEADER) + "\n")
    elif kind == "corrupt xlsx":
        good = write_settlement_xlsx([ROW], workspace.root / "good.xlsx")
        (workspace.inbox / f"{NAME}.xlsx").write_bytes(good.read_bytes()[:700])
        return f"{NAME}.xlsx"
    return f"{NAME}.csv"


FAULTS = [
    ("empty", "file is empty"),
    ("undecodable", "not UTF-8"),
    ("missing column", "required column(s) missing"),
    ("trailer", "TOTAL trailer"),
    ("settlement date", "is not the settlement date 2026-11-30"),
    ("header only", "no data rows"),
    ("corrupt xlsx", "corrupt XLSX"),
]


@pytest.mark.parametrize(("kind", "fault"), FAULTS, ids=[f[0] for f in FAULTS])
def test_file_faults_reject_the_run_and_change_nothing(workspace: Workspace, kind: str,
                                                       fault: str) -> None:
    before = workspace.snapshot()
    name = _write(workspace, kind)
    done = workspace.run()
    assert done.returncode == 5, done.stdout[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("recon: FILE_REJECTED: ")
    assert name in lines[0] and fault in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert workspace.snapshot() == before
    alerts = list(workspace.outbox.glob("alert_M001_20261130_*.eml"))
    assert len(alerts) == 1
    alert = message_from_bytes(alerts[0].read_bytes(), policy=policy.default)
    assert "ALERT" in alert["Subject"]
    assert fault in alert.get_body(("plain",)).get_content()


def test_missing_file(workspace: Workspace) -> None:
    before = workspace.snapshot()
    done = workspace.run()
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        f"recon: FILE_MISSING: {NAME}.csv (or .xlsx) is not in {workspace.inbox}"]
    assert workspace.snapshot() == before
    assert list(workspace.outbox.glob("alert_*.eml"))


def test_not_a_working_day(workspace: Workspace) -> None:
    done = workspace.run("2026-12-25")
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        "recon: NOT_WORKING_DAY: 2026-12-25 (Friday) is not a working day (Christmas Day): "
        "no settlement file is due"]


def test_bad_arguments(workspace: Workspace) -> None:
    done = workspace.run("30/11/2026")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "recon: CONFIG: --date '30/11/2026' is not a date (YYYY-MM-DD)"]


def test_database_unreachable(workspace: Workspace) -> None:
    write_settlement_csv([ROW], workspace.inbox / f"{NAME}.csv")
    done = workspace.recon("run", "--date", "2026-11-30", "--merchant", "M001",
                           "--database", "postgresql+psycopg://nobody@127.0.0.1:1/none",
                           "--source", str(workspace.inbox), "--outbox", str(workspace.outbox))
    assert done.returncode == 8
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recon: DATABASE: database postgresql")


def test_a_temporary_prefect_server_gets_time_for_its_first_start_unless_configured() -> None:
    """Prefect's own 20 s failed a fresh machine's first `recon demo` (the server creates
    its database then); the environment still wins."""
    script = ("from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as T\n"
              "from recon.app.cli import prefect_defaults\n"
              "with prefect_defaults():\n    print(T.value())\nprint(T.value())\n")
    env = {k: v for k, v in os.environ.items()
           if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    default = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, check=True)
    assert default.stdout.split() == ["120", "20"]
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "45"
    configured = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, check=True)
    assert configured.stdout.split() == ["45", "45"]
