"""Running it for real: several merchants, backfills, concurrent runs, secrets."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recon.app.cli import main
from tests.test_golden import GOLDEN, load_case_records

CARRY = GOLDEN / "carry_over"


def _config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_several_merchants_one_failure_does_not_stop_the_others(
        tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    load_case_records(CARRY, db)
    shutil.copytree(CARRY / "inbox", tmp_path / "m001")
    (tmp_path / "m002").mkdir()
    config = _config(tmp_path / "recon.toml", f"""
[recon]
database_url = "{db}"
report_dir = "{tmp_path / 'reports'}"
archive_dir = "{tmp_path / 'archive'}"
outbox = "{tmp_path / 'outbox'}"

[[recon.merchants]]
merchant_id = "M002"
source = "{tmp_path / 'm002'}"
mail_to = ["m002-finance@example.com"]

[[recon.merchants]]
merchant_id = "M001"
source = "{tmp_path / 'm001'}"
mail_to = ["m001-finance@example.com"]
""")
    code = main(["run", "--config", str(config), "--date", "2026-11-30"])
    captured = capsys.readouterr()
    assert code == 4
    assert [line for line in captured.err.splitlines() if line.startswith("recon:")] == [
        f"recon: M002 2026-11-30: FILE_MISSING: OVO_SETTLEMENT_M002_20261130.csv (or .xlsx) "
        f"is not in {tmp_path / 'm002'}"]
    summary = json.loads((tmp_path / "reports/M001/2026-11-30/summary.json").read_text())
    assert summary["counts"]["MATCHED"] == 1
    (mail,) = list((tmp_path / "outbox").glob("recon_M001_*.eml"))
    assert "To: m001-finance@example.com" in mail.read_text()
    (alert,) = list((tmp_path / "outbox").glob("alert_M002_*.eml"))
    assert "To: m002-finance@example.com" in alert.read_text()


def test_backfill_runs_every_working_day_in_order(tmp_path: Path, prefect_api: str,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECON_DATABASE_URL", raising=False)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    load_case_records(CARRY, db)
    shutil.copytree(CARRY / "inbox", tmp_path / "inbox")
    code = main(["backfill", "--from", "2026-11-28", "--to", "2026-12-02", "--merchant", "M001",
                 "--database", db, "--source", str(tmp_path / "inbox"),
                 "--report-dir", str(tmp_path / "reports"), "--outbox", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "RECON_DATABASE_URL" not in os.environ  # --database was lent to the runs only
    assert "backfill: 3 working days from 2026-11-30 to 2026-12-02" in printed
    for number, day in enumerate(["2026-11-30", "2026-12-01", "2026-12-02"], start=1):
        summary = json.loads((tmp_path / f"reports/M001/{day}/summary.json").read_text())
        expected = json.loads((CARRY / "expected" / f"{number}_{day}.json").read_text())
        assert summary["counts"] == expected["counts"]
        assert summary["open_items"] == expected["open_items"]


HOLD_LOCK = """
import sys, time, datetime as dt
from recon.store.engine import make_engine
from recon.store.locks import hold_run_lock
engine = make_engine(sys.argv[1])
with hold_run_lock(engine, "M001", dt.date(2026, 11, 30), wait_seconds=0):
    print("held", flush=True)
    sys.stdin.read()  # held until the test closes this process's input
"""


def test_two_processes_on_the_same_date(database_url: str, tmp_path: Path,
                                        prefect_api: str) -> None:
    load_case_records(CARRY, database_url)
    shutil.copytree(CARRY / "inbox", tmp_path / "inbox")
    env = {**os.environ, "PREFECT_API_URL": prefect_api}

    def recon_run(wait: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "recon.app.cli", "run", "--date", "2026-11-30", "--merchant",
             "M001", "--database", database_url, "--source", str(tmp_path / "inbox"),
             "--report-dir", str(tmp_path / "reports"), "--outbox", str(tmp_path / "out")],
            env={**env, "RECON_LOCK_WAIT_SECONDS": wait,
                 "RECON_ARCHIVE_DIR": str(tmp_path / "archive")},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # The holder keeps the lock until told to let go, however slowly the runs start.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, database_url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = recon_run("1")
        out, err = refused.communicate(timeout=300)
        assert refused.returncode == 6, out[-1500:]
        assert err.splitlines() == [
            "recon: RUN_LOCKED: another run of M001 2026-11-30 is in progress (waited 1 s); "
            "try again when it has finished"]
        waiting = recon_run("60")
        time.sleep(3)  # the run starts and waits for the lock meanwhile
        assert holder.stdin is not None
        holder.stdin.close()
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err
        assert holder.wait(30) == 0
    finally:
        holder.kill()


@pytest.mark.postgres
def test_passwords_stay_out_of_logs_and_flow_parameters(
        postgres_server_url: str, tmp_path: Path, prefect_api: str) -> None:
    from prefect.client.orchestration import get_client

    from tests.conftest import reset_postgres

    reset_postgres(postgres_server_url)
    load_case_records(CARRY, postgres_server_url)
    shutil.copytree(CARRY / "inbox", tmp_path / "inbox")
    # Trust authentication ignores the password, so the URL works and carries a secret.
    secret_url = postgres_server_url.replace("postgres@", "postgres:hunter2-secret@")
    done = subprocess.run(
        [sys.executable, "-m", "recon.app.cli", "run", "--date", "2026-11-30", "--merchant", "M001",
         "--database", secret_url, "--source", str(tmp_path / "inbox"),
         "--report-dir", str(tmp_path / "reports"), "--outbox", str(tmp_path / "out")],
        env={**os.environ, "PREFECT_API_URL": prefect_api,
             "RECON_ARCHIVE_DIR": str(tmp_path / "archive")},
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    assert runs and all("hunter2" not in json.dumps(r.parameters, default=str) for r in runs)
    for path in (tmp_path / "reports").rglob("*"):
        if path.is_file():
            assert b"hunter2" not in path.read_bytes()


def test_a_secret_block_can_hold_the_database_url(tmp_path: Path, prefect_api: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret

    from pipelines.flows import reconcile_settlement

    db = f"sqlite:///{tmp_path / 'r.db'}"
    load_case_records(CARRY, db)
    monkeypatch.delenv("RECON_DATABASE_URL", raising=False)
    Secret(value=db).save("recon-test-database-url", overwrite=True)
    shutil.copytree(CARRY / "inbox", tmp_path / "inbox")
    config = _config(tmp_path / "recon.toml", f"""
[recon]
merchant_id = "M001"
source = "{tmp_path / 'inbox'}"
report_dir = "{tmp_path / 'reports'}"
archive_dir = "{tmp_path / 'archive'}"
outbox = "{tmp_path / 'out'}"
[recon.secret_blocks]
database_url = "recon-test-database-url"
""")
    state = reconcile_settlement(settlement_date="2026-11-30", config_file=str(config),
                                 return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["summary"].counts["MATCHED"] == 1
    assert dt.date(2026, 11, 30).isoformat() in state.result()["paths"]["summary"]
