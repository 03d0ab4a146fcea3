"""Backfills and merchants spread over a real Dask cluster (worker processes over TCP on
loopback) give the same results as the sequential run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recon.app.cli import main
from recon.store.engine import make_engine
from recon.store.tables import recon_exceptions, recon_ledger
from tests.test_golden import GOLDEN, load_case_records

CARRY = GOLDEN / "carry_over"
DAYS = ["2026-11-30", "2026-12-01", "2026-12-02"]

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")


def _setup(root: Path) -> Path:
    db = f"sqlite:///{root / 'r.db'}"
    load_case_records(CARRY, db)
    shutil.copytree(CARRY / "inbox", root / "m001")
    (root / "m002").mkdir()
    config = root / "recon.toml"
    # M002 has no files. On one of DAYS before its deadline (WIB), the day's missing file
    # would be waited for until that deadline; a deadline at midnight has always passed.
    config.write_text(f"""
[recon]
file_deadline = "00:00"
database_url = "{db}"
report_dir = "{root / 'reports'}"
archive_dir = "{root / 'archive'}"
outbox = "{root / 'outbox'}"

[[recon.merchants]]
merchant_id = "M001"
source = "{root / 'm001'}"

[[recon.merchants]]
merchant_id = "M002"
source = "{root / 'm002'}"
""")
    return config


def _state(root: Path) -> dict[str, Any]:
    """What the runs left: each date's summary (but its run times) and the ledger and
    exception tables (but their ids)."""
    summaries = {}
    for day in DAYS:
        summary = json.loads((root / f"reports/M001/{day}/summary.json").read_text())
        summary.pop("run", None)
        summary.pop("generated_at", None)
        summaries[day] = summary
    engine = make_engine(f"sqlite:///{root / 'r.db'}")
    with engine.connect() as conn:
        ledger = sorted(tuple(r[2:]) for r in conn.execute(select(recon_ledger)))
        exceptions = sorted(tuple(map(str, r[1:3] + r[4:])) for r in
                            conn.execute(select(recon_exceptions)))
    engine.dispose()
    return {"summaries": summaries, "ledger": ledger, "exceptions": exceptions}


def test_a_backfill_over_a_dask_cluster_equals_the_sequential_run(
        tmp_path: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Worker processes report their task runs to the same Prefect API.
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    sequential, spread = tmp_path / "sequential", tmp_path / "spread"
    sequential.mkdir()
    spread.mkdir()
    args = ["backfill", "--from", DAYS[0], "--to", DAYS[-1]]
    code = main([*args, "--config", str(_setup(sequential))])
    assert code == 4  # M002 has no files: FILE_MISSING, the other merchant goes on
    first = capsys.readouterr()

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        code = main([*args, "--config", str(_setup(spread)),
                     "--dask-address", cluster.scheduler_address])
        second = capsys.readouterr()
        workers = cluster.scheduler_info["workers"]
    assert code == 4
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert _state(spread) == _state(sequential)
    assert _state(spread)["ledger"]  # something was settled
    runs = [line.replace(str(spread), str(sequential)) for line in second.out.splitlines()
            if line.startswith("  2026-")]
    assert runs == [line for line in first.out.splitlines() if line.startswith("  2026-")]
    assert len(runs) == 6 and sum("reconciled" in line for line in runs) == 3
    failures = [line for line in second.err.splitlines() if line.startswith("recon:")]
    assert len(failures) == 3 and all("M002" in f and "FILE_MISSING" in f for f in failures)
