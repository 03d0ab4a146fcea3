"""The daily schedule against a real `prefect server start` on loopback: the deployment,
a parameterised re-run through the Prefect command line, and a holiday."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from recon.core.calendar import WIB
from tests.smtp_server import free_port
from tests.test_golden import GOLDEN, load_case_records

BIN = Path(sys.executable).parent
CARRY = GOLDEN / "carry_over"


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--no-ui"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        _wait(healthy, 120, "prefect server start")
        yield {**env, "PREFECT_API_URL": url, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_served_deployment_runs_a_parameterised_rerun(prefect_server: dict[str, str],
                                                      tmp_path: Path) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    db = f"sqlite:///{tmp_path / 'r.db'}"
    load_case_records(CARRY, db)
    shutil.copytree(CARRY / "inbox", tmp_path / "inbox")
    config = tmp_path / "recon.toml"
    config.write_text(f"""
[recon]
merchant_id = "M001"
database_url = "{db}"
source = "{tmp_path / 'inbox'}"
report_dir = "{tmp_path / 'reports'}"
archive_dir = "{tmp_path / 'archive'}"
outbox = "{tmp_path / 'outbox'}"
# Today's file is absent: on a working day before its deadline (WIB) the no-date run would
# wait for it until then; a deadline at midnight has always passed.
file_deadline = "00:00"
""")
    env = prefect_server
    serve = subprocess.Popen([str(BIN / "recon"), "serve", "--config", str(config)], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        with SyncPrefectClient(env["PREFECT_API_URL"]) as client:
            def deployment():  # type: ignore[no-untyped-def]
                try:
                    return client.read_deployment_by_name("reconcile-merchants/daily")
                except Exception:
                    return None

            found = _wait(deployment, 120, "the deployment")
            (schedule,) = found.schedules
            assert schedule.schedule.cron == "0 9 * * 1-5"
            assert schedule.schedule.timezone == "Asia/Jakarta"
            assert found.parameters == {"config_file": str(config)}

            def run(day: str | None):  # type: ignore[no-untyped-def]
                parameters = ["--param", f"settlement_date={day}"] if day else []
                started = subprocess.run(
                    [str(BIN / "prefect"), "deployment", "run", "reconcile-merchants/daily",
                     *parameters], env=env, capture_output=True, text=True, timeout=120)
                assert started.returncode == 0, started.stdout + started.stderr
                run_id = next(line.split()[-1] for line in started.stdout.splitlines()
                              if "UUID" in line)

                def finished():  # type: ignore[no-untyped-def]
                    flow_run = client.read_flow_run(run_id)
                    return flow_run if flow_run.state and flow_run.state.is_final() else None

                return _wait(finished, 180, f"the flow run of {day}")

            done = run("2026-11-30")
            assert done.state.is_completed(), done.state.message
            summary = json.loads((tmp_path / "reports/M001/2026-11-30/summary.json").read_text())
            assert summary["counts"]["MATCHED"] == 1

            holiday = run("2026-12-25")
            assert holiday.state.is_completed()
            assert "NOT_WORKING_DAY" in (holiday.state.message or "")
            assert not (tmp_path / "reports/M001/2026-12-25").exists()

            # No date given: the run's scheduled date in WIB (today), whose file is absent.
            today = datetime.now(WIB).date()
            default = run(None)
            message = default.state.message or ""
            assert f"{today:%Y%m%d}" in message or today.isoformat() in message, message
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
