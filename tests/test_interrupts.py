"""SIGINT and SIGTERM end a command within seconds, with exit 130/143 and one line, the
database as it was and the flow run marked; the temporary Prefect server never outlives
its command. Real `recon` processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recon.core.calendar import WIB
from recon.formats.filegen import write_settlement_csv
from tests.test_hardening import DAY, NAME, Site, dump, rows

#: Rows enough for the match and the write to last a moment to be interrupted in.
BIG = 150_000


def _uvicorn_servers() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"prefect.server.api.server:create_app" in command:
                found.add(int(entry.name))
    return found


def _start(site: Site, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "recon.app.cli", *args], cwd=site.root,
                            env={**site.env, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run_args(site: Site, day: str | None = DAY) -> list[str]:
    return ["run", *(["--date", day] if day else []), "--merchant", "M001", "--database",
            site.url, "--source", str(site.inbox), "--report-dir", str(site.out / "reports"),
            "--outbox", str(site.out / "outbox")]


def _wait_for(process: subprocess.Popen[str], text: str, seconds: float = 240) -> list[str]:
    """Stdout lines up to the first holding `text`."""
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not seen in: {''.join(seen)[-3000:]}")


def _stopped(process: subprocess.Popen[str], signum: int) -> tuple[int, str, float]:
    started = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    return process.returncode, err, time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_polling_ends_the_run_and_marks_the_flow_run(
        tmp_path: Path, prefect_api: str, signum: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", prefect_api)
    today = dt.datetime.now(WIB).date()
    began = dt.datetime.now(dt.UTC)
    run = _start(site, *_run_args(site, day=None), env={
        "RECON_EXTRA_WORKING_DAYS": today.isoformat(), "RECON_FILE_DEADLINE": "23:59:59",
        "RECON_POLL_SECONDS": "2"})
    first = _wait_for(run, "looking again in")
    assert first[0].startswith(f"recon: M001 {today}: waiting for OVO_SETTLEMENT_M001_")
    code, err, took = _stopped(run, signum)
    assert code == 128 + signum
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    assert err.strip().splitlines() == [
        f"recon: INTERRUPTED: stopped by {name}; nothing of an unfinished run was saved"]
    assert took < 10
    with get_client(sync_client=True) as client:
        ended = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[f"M001-{today}"]),
            start_time=FlowRunFilterStartTime(after_=began),
            state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.CRASHED, StateType.CANCELLED]))))
    assert ended, "the interrupted flow run is marked Crashed or Cancelled"


@pytest.mark.parametrize(("step", "signum"), [("load:", signal.SIGINT),
                                              ("match:", signal.SIGTERM)])
def test_a_signal_during_the_match_or_the_write_leaves_the_database_as_it_was(
        tmp_path: Path, database_url: str, prefect_api: str, step: str, signum: int) -> None:
    """After the load the match runs; after the match the ledger, the workbook and the
    persist. Interrupted there, the date re-runs to the summary of a run never stopped."""
    site = Site(tmp_path, database_url, prefect_api)
    big = [{**row, "MerchantInvoice": f"INV-{i}"} for i, row in
           enumerate(rows() * (BIG // len(rows())))]
    write_settlement_csv(big, site.inbox / f"{NAME}.csv")
    before = dump(site.url)
    run = _start(site, *_run_args(site))
    _wait_for(run, f"- {step}")
    code, err, took = _stopped(run, signum)
    if code == 0:
        pytest.skip("the run finished before the signal reached it")
    assert code == 128 + signum, err
    assert len(err.strip().splitlines()) == 1 and "INTERRUPTED" in err
    assert took < 10
    assert dump(site.url) == before
    done = subprocess.run([sys.executable, "-m", "recon.app.cli", *_run_args(site)], cwd=site.root,
                          env=site.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((site.out / "reports/M001" / DAY / "summary.json").read_text())
    assert summary["run"]["attempt"] == 1
    assert summary["counts"]["MISSING_IN_RECORDS"] == len(big) - 30
    assert summary["counts"]["MATCHED"] == 30


def test_a_killed_command_takes_its_temporary_server_with_it(tmp_path: Path) -> None:
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", "")
    env = {key: value for key, value in site.env.items() if key != "PREFECT_API_URL"}
    today = dt.datetime.now(WIB).date()
    before = _uvicorn_servers()
    run = subprocess.Popen([sys.executable, "-m", "recon.app.cli", *_run_args(site, day=None)],
                           cwd=site.root, env={**env, "PREFECT_HOME": str(tmp_path / "ph"),
                                               "RECON_EXTRA_WORKING_DAYS": today.isoformat(),
                                               "RECON_FILE_DEADLINE": "23:59:59"},
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _wait_for(run, "looking again in", seconds=300)
    ours = _uvicorn_servers() - before
    assert ours, "the command runs its own temporary server"
    os.kill(run.pid, signal.SIGKILL)
    run.wait(30)
    deadline = time.monotonic() + 15
    while _uvicorn_servers() & ours and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _uvicorn_servers() & ours


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_on_a_signal_with_its_exit_code(tmp_path: Path, prefect_api: str,
                                                    signum: int) -> None:
    """Prefect's runner shuts down gracefully on either signal; the command still says
    which one stopped it, with its exit code."""
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'recon.db'}", prefect_api)
    serving = subprocess.Popen([sys.executable, "-m", "recon.app.cli", "serve", "--database",
                                site.url, "--name", f"interrupts-{signum}"], cwd=site.root,
                               env=site.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        _wait_for(serving, "is being served")
        started = time.monotonic()
        os.killpg(serving.pid, signum)
        _, err = serving.communicate(timeout=60)
        assert time.monotonic() - started < 10
    finally:
        if serving.poll() is None:
            serving.kill()
    assert serving.returncode == 128 + signum
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    assert err.strip().splitlines() == [
        f"recon: INTERRUPTED: stopped by {name}; nothing of an unfinished run was saved"], err
