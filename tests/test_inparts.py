"""A day's run in parts on disk (`recon.inparts.run`) stores and reports what the whole run
does: the same ledger, exceptions, closures, summary and workbook."""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from recon.core import categories as cat
from recon.core.calendar import WorkingCalendar
from recon.core.match import match_settlement
from recon.core.result import MatchContext, ReconResult
from recon.formats.filegen import HEADER
from recon.formats.ovo_v1 import OVO_V1
from recon.formats.reader import read_settlement_file
from recon.inparts.run import load_in_parts, match_in_parts_on_disk, spill_in_parts
from recon.report.summary import Summary, build_summary
from recon.report.workbook import write_exception_workbook
from recon.store.engine import init_db, make_engine
from recon.store.history import RunRecord
from recon.store.load import load_run_inputs
from recon.store.persist import RunWriter
from recon.store.records import insert_records
from recon.store.tables import recon_exceptions, recon_ledger
from tests.builders import S, context, stored_state
from tests.test_properties import cells_of, ledgers_of_other_dates, tangled, to_records

RUN = RunRecord("M001", S, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC), "f.csv", "0" * 64,
                0, "archive/f.csv", 0, {})


def _write_file(rows: list[dict[str, Any]], path: Path) -> None:
    """The rows as the builders make them, as an ovo-v1 settlement file."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for number, row in enumerate(rows, start=2):
            writer.writerow([
                S.isoformat(), row.get("time", "2026-11-27 10:00:00"), "M001", "",
                row["merchant_invoice"], row.get("refund_invoice", ""),
                row.get("ovo_reference_no", f"OVO-{number}"), row["transaction_type"],
                "OVO Cash", row["gross"], row["mdr"], row["tax"], row["net"]])


def _database(path: Path, data: dict[str, Any], entries: list[dict[str, Any]]) -> Any:
    engine = make_engine(f"sqlite:///{path}")
    init_db(engine)
    insert_records(engine, *to_records(data))
    with engine.begin() as conn:
        if entries:
            conn.execute(insert(recon_ledger), entries)
        for number, opened, kind, key, amount in data["open_items"]:
            conn.execute(insert(recon_exceptions).values(
                exception_id=number, merchant_id="M001", settlement_date=opened, run_id=1,
                category=cat.MISSING_IN_SETTLEMENT, kind=kind, record_key=key,
                record_amount=Decimal(amount), reason="earlier", state="open"))
    return engine


def _entries(data: dict[str, Any], drawn: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scenario's entries of other dates and the drawn ones, as the ledger holds them
    (a line of its own each)."""
    return [{"merchant_id": "M001", "run_id": 1, **entry, "line_no": line}
            for line, entry in enumerate([*data["ledger"], *drawn], start=2)]


def _report(result: ReconResult, folder: Path) -> tuple[Summary, dict]:
    summary = build_summary(result, "f.csv", "0" * 64, "csv (,)", False)
    return summary, cells_of(write_exception_workbook(result, summary, folder / "book.xlsx"))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_a_run_in_parts_stores_and_reports_what_the_whole_run_does(
        tmp_path_factory: pytest.TempPathFactory, drawn: st.DataObject) -> None:
    """Tangled scenarios (refund rows naming other payments' refunds, refund rows of one
    settle key under two invoices, entries of other dates of other payments' refunds,
    payment entries the matcher never writes, open items), 2 to 5 parts: the ledger,
    exceptions and runs stored, the summary and every cell of the workbook."""
    data = drawn.draw(tangled())
    if not data["rows"]:  # a file without rows is rejected either way
        return
    entries = _entries(data, drawn.draw(ledgers_of_other_dates(data)))
    parts = drawn.draw(st.integers(min_value=2, max_value=5))
    folder = tmp_path_factory.mktemp("inparts")
    path = folder / "f.csv"
    _write_file(data["rows"], path)
    ctx = MatchContext("M001", S, WorkingCalendar(), context().fee_rules)

    whole_db = _database(folder / "whole.db", data, entries)
    parsed = read_settlement_file(path, OVO_V1, S)
    inputs = load_run_inputs(whole_db, "M001", S, ctx.covered_dates, parsed.rows)
    whole = match_settlement(parsed.rows, inputs.payments, inputs.refunds, inputs.ledger,
                             inputs.open_items, ctx)
    RunWriter(whole_db).finish(whole, RUN)

    parts_db = _database(folder / "parts.db", data, entries)
    spilled, ties = spill_in_parts(parts_db, path, OVO_V1, ctx, folder / "rows", parts)
    loaded = load_in_parts(parts_db, ctx, spilled, ties, folder / "payments")
    writer = RunWriter(parts_db)
    reported = match_in_parts_on_disk(loaded, ctx, partial(writer.write_ledger_part, run=RUN),
                                      folder / "flagged")
    writer.finish(reported, RUN)

    assert stored_state(parts_db) == stored_state(whole_db)
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    assert _report(reported, folder / "a") == _report(whole, folder / "b")
    assert spilled.data_rows == parsed.data_rows
    whole_db.dispose()
    parts_db.dispose()


def test_records_that_tie_payments_of_two_parts_stop_the_run() -> None:
    """Records loaded by the parts that tie two payments the groups put apart (the
    database changed between the ties' load and the parts'): a one-line StoreError."""
    from recon.core.errors import StoreError
    from recon.core.schemas import LEDGER, OPEN_ITEMS, REFUNDS, empty_frame
    from recon.inparts.load import Ties
    from recon.inparts.parts import part_numbers
    from recon.inparts.run import check_groups
    from tests.builders import refund_row, refunds_frame, rows_frame

    keys = [f"P-{i}" for i in range(40)]
    at = part_numbers(pd.Series(keys, dtype="str"), {}, 4)
    one, other = keys[0], next(k for k, p in zip(keys, at, strict=True) if p != at[0])
    rows = rows_frame([refund_row(one, "1.00", "RF-X")])
    ties = Ties(refund_rows=rows, refunds=empty_frame(REFUNDS), ledger=empty_frame(LEDGER),
                window_refunds=pd.DataFrame(), window_ledger=pd.DataFrame(),
                open_items=empty_frame(OPEN_ITEMS), groups={})
    tied = refunds_frame([("RF-X", other, "OVR-X", "1.00", "00", "2026-11-28 10:00")])
    check_groups(ties, empty_frame(REFUNDS), empty_frame(LEDGER), 4)  # nothing ties
    with pytest.raises(StoreError, match=f"payment {other} is now tied to {one}|payment {one} "
                                         f"is now tied to {other}") as raised:
        check_groups(ties, tied, empty_frame(LEDGER), 4)
    assert "run the date again" in raised.value.one_line()


def test_a_run_in_parts_is_refused_on_a_cluster() -> None:
    """The fan-out reads each date's file whole on a worker: a run in parts says so."""
    from pipelines.flows import prepare_task
    from recon.config import Settings

    prepared = prepare_task.fn(Settings(merchant_id="M001", parts=4), S)
    assert prepared.error is not None
    assert prepared.error.one_line().startswith("CONFIG: parts: a run in parts")
    assert prepared.parsed is None


def test_a_part_s_result_kept_for_the_report_holds_none_of_its_rows() -> None:
    """The empty rows a part's result keeps once its flagged rows are on disk have the
    rows' columns and types but none of their data: an empty slice of an Arrow-backed
    text column keeps the whole column's buffers (on a day of every row flagged, each
    part's rows were kept so: 3.5 GiB at 10M rows)."""
    from recon.core.schemas import empty_frame

    rows = pd.DataFrame({"reason": pd.Series(["no payment with this key"] * 1000, dtype="str"),
                         "gross": pd.array(range(1000), dtype="Int64"),
                         "category": pd.Series(["MISSING_IN_RECORDS"] * 1000,
                                               dtype="category")})

    def held(frame: pd.DataFrame) -> int:
        return frame["reason"].array._pa_array.get_total_buffer_size()

    assert held(rows.iloc[:0].copy()) == held(rows)  # what a slice would have kept
    kept = empty_frame(rows.dtypes.to_dict())
    assert kept.empty and kept.dtypes.to_dict() == rows.dtypes.to_dict()
    assert held(kept) < 100
