"""The Prefect flow itself: task wiring, artifacts, the all-clear switch, holidays."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from recon.app.demo import DEMO_DATES, generate, write_demo


def _merchant(tmp_path: Path) -> Path:
    data = generate(per_day=110)
    data.files = {DEMO_DATES[0]: data.files[DEMO_DATES[0]]}
    return write_demo(tmp_path / "merchant", data)


def test_a_run_publishes_its_summary_as_artifacts(tmp_path: Path, prefect_api: str) -> None:
    from pipelines.flows import reconcile_settlement

    config = _merchant(tmp_path)
    state = reconcile_settlement(settlement_date="2026-11-30", config_file=str(config),
                                 return_state=True)
    assert state.is_completed(), state.message
    outcome = state.result()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["recon-m001-2026-11-30",
                                        "recon-m001-2026-11-30-workbook"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        tasks = {run.name.rsplit("-", 1)[0] for run in client.read_task_runs()}
    by_key = {a.key: a for a in found}
    table = by_key["recon-m001-2026-11-30"]
    assert table.type == "table"
    rows = table.data if isinstance(table.data, list) else __import__("json").loads(table.data)
    counts = {row["category"]: row["count"] for row in rows}
    assert counts == outcome["summary"].counts
    markdown = by_key["recon-m001-2026-11-30-workbook"]
    assert outcome["paths"]["workbook"] in str(markdown.data)
    assert {"fetch", "read", "load", "match", "persist", "workbook", "report", "notify"} <= tasks


def test_all_clear_mail_can_be_switched_off(tmp_path: Path, prefect_api: str) -> None:
    from decimal import Decimal

    from pipelines.flows import reconcile_settlement
    from recon.core.calendar import WIB
    from recon.formats.filegen import write_settlement_csv
    from recon.store.engine import init_db, make_engine
    from recon.store.records import insert_records

    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    init_db(engine)
    insert_records(engine, [{
        "partner_reference_no": "INV-1", "reference_no": "OVO1", "merchant_id": "M001",
        "amount": Decimal("10000.00"), "pay_option": "OVO_CASH", "status": "00",
        "transaction_time": dt.datetime(2026, 11, 30, 10, tzinfo=WIB)}])
    engine.dispose()
    write_settlement_csv([{
        "SettlementDate": "2026-12-01", "TransactionDateTime": "2026-11-30 10:00:00",
        "MerchantID": "M001", "MerchantInvoice": "INV-1", "OVOReferenceNo": "OVO1",
        "TransactionType": "PAYMENT", "PaymentSource": "OVO Cash", "GrossAmount": "10000.00",
        "MDRAmount": "70.00", "TaxAmount": "7.70", "NetAmount": "9922.30"}],
        tmp_path / "inbox" / "OVO_SETTLEMENT_M001_20261201.csv")
    overrides = {"database_url": f"sqlite:///{tmp_path / 'r.db'}",
                 "source": str(tmp_path / "inbox"), "report_dir": str(tmp_path / "reports"),
                 "archive_dir": str(tmp_path / "archive"), "outbox": str(tmp_path / "outbox")}
    quiet = reconcile_settlement(settlement_date="2026-12-01", merchant_id="M001",
                                 overrides={**overrides, "mail_all_clear": "false"},
                                 return_state=True)
    assert quiet.is_completed()
    assert quiet.result()["summary"].exceptions == 0
    assert quiet.result()["paths"]["email"] == ""
    assert not (tmp_path / "outbox").exists()
    told = reconcile_settlement(settlement_date="2026-12-01", merchant_id="M001",
                                overrides=overrides, return_state=True)
    (mail,) = list((tmp_path / "outbox").glob("recon_M001_20261201_*.eml"))
    assert told.result()["paths"]["email"] == str(mail)
    assert "Subject: [OVO recon] M001 2026-12-01: all clear" in mail.read_text()


def test_a_holiday_completes_doing_nothing(tmp_path: Path, prefect_api: str) -> None:
    from pipelines.flows import reconcile_settlement

    config = _merchant(tmp_path)
    state = reconcile_settlement(settlement_date=dt.date(2026, 12, 25).isoformat(),
                                 config_file=str(config), return_state=True)
    assert state.is_completed()
    assert state.message == "NOT_WORKING_DAY: 2026-12-25 (Christmas Day)"
    assert not (tmp_path / "merchant" / "reports").exists()


def test_a_run_that_cannot_persist_leaves_the_earlier_report_in_place(
        tmp_path: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.flows as flows
    from recon.core.errors import StoreError

    config = _merchant(tmp_path)
    first = flows.reconcile_settlement(settlement_date="2026-11-30", config_file=str(config),
                                       return_state=True)
    assert first.is_completed(), first.message
    workbook = Path(first.result()["paths"]["workbook"])
    before = workbook.read_bytes()

    def refuse(*args: object, **kwargs: object) -> None:
        raise StoreError("database sqlite:///r.db: disk I/O error")

    monkeypatch.setattr(flows.RunWriter, "write", refuse)
    second = flows.reconcile_settlement(settlement_date="2026-11-30", config_file=str(config),
                                        return_state=True)
    assert second.is_failed()
    assert second.message.startswith("DATABASE: ")
    assert workbook.read_bytes() == before  # the workbook built meanwhile was thrown away
    assert sorted(p.name for p in workbook.parent.parent.iterdir()) == [workbook.parent.name]
    summary = __import__("json").loads((workbook.parent / "summary.json").read_text())
    assert summary["run"]["attempt"] == 1


def test_step_memory_is_this_process_not_the_one_that_started_it() -> None:
    import subprocess
    import sys

    ballast = bytearray(1200 * 1024 * 1024)  # the starting process holds 1.2 GiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    probe = ("import resource; from pipelines.flows import peak_memory_mib; "
             "print(peak_memory_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parent.parent)
    own, inherited = (float(v) for v in done.stdout.split())
    del ballast
    assert inherited > 1200  # what ru_maxrss alone would have logged
    assert own < 1000


def test_the_persist_line_says_how_the_ledger_went_in() -> None:
    """The persist step's line names the run, a re-run, the ledger's seconds when it was
    written alongside the match, and how many entries a re-run kept as they were."""
    from pipelines.flows import persisted_detail
    from recon.store.engine import make_engine
    from recon.store.persist import PersistedRun, RunWriter

    engine = make_engine("sqlite://")
    finished = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    writer = RunWriter(engine)
    assert persisted_detail(PersistedRun(7, 1, False, finished), writer, 5) == "run 7, attempt 1"
    writer.ledger_seconds = 2.345
    assert persisted_detail(PersistedRun(7, 1, False, finished), writer, 5) == (
        "run 7, attempt 1; the ledger was written alongside the match (2.35 s)")
    writer.ledger_kept = 1_019_958
    assert persisted_detail(PersistedRun(8, 2, True, finished), writer, 1_020_000) == (
        "run 8, attempt 2 (re-run: replaced the earlier results); the ledger was written "
        "alongside the match (2.35 s; 1,019,958 of 1,020,000 entries unchanged from the run "
        "before, kept)")
    engine.dispose()
