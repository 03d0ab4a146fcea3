"""Properties of the engine and the store, over generated files and records."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon.core import categories as cat
from recon.core.calendar import WIB, WorkingCalendar
from recon.core.match import match_settlement
from recon.core.result import Ledger, MatchContext
from recon.store.engine import init_db, make_engine
from recon.store.history import RunRecord
from recon.store.load import load_run_inputs
from recon.store.persist import persist_run
from recon.store.records import insert_records
from tests.builders import (
    S,
    context,
    ledger_frame,
    open_items_frame,
    payment_row,
    payments_frame,
    refund_row,
    refunds_frame,
    rows_frame,
    stored_state,
)

TIMES = ["2026-11-26 10:00", "2026-11-27 00:00", "2026-11-28 12:00", "2026-11-29 23:59:59",
         "2026-11-30 00:00"]
STATUSES = ["00", "00", "00", "04", "06", "03"]


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    """Payments, refunds and a settlement file with every kind of disagreement."""
    n = draw(st.integers(min_value=0, max_value=12))
    payments, refunds, rows = [], [], []
    for i in range(n):
        amount = Decimal(draw(st.integers(min_value=1, max_value=2000))) * 100
        status = draw(st.sampled_from(STATUSES))
        payments.append((f"P{i}", f"{amount:.2f}", status, draw(st.sampled_from(TIMES))))
        action = draw(st.sampled_from(["ok", "ok", "skip", "amount", "fee", "dup"]))
        if action != "skip":
            gross = amount + (1 if action == "amount" else 0)
            row = payment_row(f"P{i}", f"{gross:.2f}")
            if action == "fee":
                row["net"] = "1.00"
            rows.extend([row, dict(row)] if action == "dup" else [row])
        for j in range(draw(st.integers(min_value=0, max_value=2))):
            part = Decimal(draw(st.integers(min_value=1, max_value=1500))) * 100 + j
            key = f"RF{i}-{j}"
            refunds.append((key, f"P{i}", f"OVR{i}-{j}", f"{part:.2f}",
                            draw(st.sampled_from(["00", "00", "06"])),
                            draw(st.sampled_from(TIMES))))
            how = draw(st.sampled_from(["key", "ref", "amount", "skip", "wrong"]))
            if how == "key":
                rows.append(refund_row(f"P{i}", f"{part:.2f}", key))
            elif how == "ref":
                rows.append(refund_row(f"P{i}", f"{part:.2f}", "", f"OVR{i}-{j}"))
            elif how == "amount":
                rows.append(refund_row(f"P{i}", f"{part:.2f}"))
            elif how == "wrong":
                rows.append(refund_row(f"P{i}", f"{part + 1:.2f}", key))
    for k in range(draw(st.integers(min_value=0, max_value=3))):
        rows.append(payment_row(f"GHOST{k}", "500.00"))
    if draw(st.booleans()):
        rows.append(payment_row("BAD", "1.00", invalid_reason="GrossAmount 'x' is not a decimal"))
    return {"payments": payments, "refunds": refunds, "rows": rows}


def run_engine(data: dict[str, Any], order: list[int] | None = None):
    rows = data["rows"] if order is None else [data["rows"][i] for i in order]
    return match_settlement(rows_frame(rows), payments_frame(data["payments"]),
                            refunds_frame(data["refunds"]), ledger_frame([]),
                            open_items_frame([]), context())


@settings(max_examples=80, deadline=None)
@given(scenarios())
def test_every_row_gets_exactly_one_category(data: dict[str, Any]) -> None:
    result = run_engine(data)
    row_counts = {k: v for k, v in result.counts.items() if k != cat.MISSING_IN_SETTLEMENT}
    assert sum(row_counts.values()) == len(data["rows"])
    assert set(result.rows["category"]) <= set(cat.ROW_CATEGORIES)
    assert sum(result.amounts[c] for c in cat.ROW_CATEGORIES) == result.totals["gross"]


@settings(max_examples=80, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_shuffling_the_file_changes_no_count(data: dict[str, Any], rnd: random.Random) -> None:
    order = list(range(len(data["rows"])))
    rnd.shuffle(order)
    assert run_engine(data).counts == run_engine(data, order).counts


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_match_is_the_same_with_its_lookups_joined_by_duckdb(
        data: dict[str, Any], rnd: random.Random) -> None:
    """Large files' key lookups go through DuckDB (`schemas.JOIN_FROM`); sent there at any
    size, every row's category, reason and flags, the ledger and the missing items are
    those of Arrow's lookups."""
    from recon.core import schemas
    order = list(range(len(data["rows"])))
    rnd.shuffle(order)
    by_arrow = run_engine(data, order)
    saved, schemas.JOIN_FROM = schemas.JOIN_FROM, 0
    try:
        by_duckdb = run_engine(data, order)
    finally:
        schemas.JOIN_FROM = saved
    pd.testing.assert_frame_equal(by_duckdb.rows, by_arrow.rows)
    pd.testing.assert_frame_equal(by_duckdb.missing, by_arrow.missing)
    for column in ("kind", "settle_key", "record_key", "line_no"):
        assert list(by_duckdb.ledger[column]) == list(by_arrow.ledger[column])
    assert by_duckdb.counts == by_arrow.counts and by_duckdb.amounts == by_arrow.amounts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["A", "B", "Ü", "", "a", "AB", "x" * 40]), max_size=30),
       st.lists(st.sampled_from(["A", "B", "Ü", "", "a", "AB", "x" * 40]), max_size=30))
def test_positions_found_by_duckdb_are_arrows(values: list[str], within: list[str]) -> None:
    """Whether each value is found and where it first occurs, with repeats on both sides,
    an empty text, case and a non-ASCII letter: DuckDB's join as Arrow's index_in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from recon.core import schemas
    left, right = pa.array(values, pa.large_string()), pa.array(within, pa.large_string())
    expected = pc.index_in(left, value_set=right).to_pylist()
    found, position = schemas.joined_positions(left, right)
    assert list(found) == [p is not None for p in expected]
    assert list(position) == [-1 if p is None else p for p in expected]


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_a_record_is_settled_or_missing_never_both(data: dict[str, Any]) -> None:
    result = run_engine(data)
    settled = {(k, r) for k, r in zip(result.ledger["kind"], result.ledger["record_key"],
                                      strict=True) if r}
    missing = set(zip(result.missing["kind"], result.missing["record_key"], strict=True))
    assert not settled & missing


def to_records(data: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    def moment(text: str) -> dt.datetime:
        return pd.Timestamp(text).tz_localize(WIB).to_pydatetime()

    payments = [{"partner_reference_no": p[0], "reference_no": p[0], "merchant_id": "M001",
                 "amount": Decimal(p[1]), "pay_option": "OVO_CASH", "status": p[2],
                 "transaction_time": moment(p[3])} for p in data["payments"]]
    refunds = [{"partner_refund_no": r[0], "original_partner_reference_no": r[1],
                "refund_no": r[2], "refund_amount": Decimal(r[3]), "status": r[4],
                "refund_time": moment(r[5])} for r in data["refunds"]]
    return payments, refunds


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_a_rerun_changes_nothing(tmp_path_factory: Any, data: dict[str, Any]) -> None:
    folder: Path = tmp_path_factory.mktemp("rerun")
    engine = make_engine(f"sqlite:///{folder / 'recon.db'}")
    init_db(engine)
    insert_records(engine, *to_records(data))
    ctx = MatchContext("M001", S, WorkingCalendar(), context().fee_rules)
    rows = rows_frame(data["rows"])

    def run_once() -> dict[str, int]:
        inputs = load_run_inputs(engine, "M001", S, ctx.covered_dates, rows)
        result = match_settlement(rows, inputs.payments, inputs.refunds, inputs.ledger,
                                  inputs.open_items, ctx)
        persist_run(engine, result, RunRecord(
            "M001", S, dt.datetime.now(dt.UTC), "f.csv", "0" * 64, len(rows), "", 0, {}))
        return result.counts

    first_counts = run_once()
    first = stored_state(engine)
    assert run_once() == first_counts
    second = stored_state(engine)
    assert second[0] == first[0] and second[1] == first[1]
    assert second[2] == [(1, False), (2, True)]
    engine.dispose()


def _refund_deltas_one_by_one(rows: pd.DataFrame, settled: pd.Series, payments: pd.DataFrame,
                              refunds: pd.DataFrame, refunded_before: dict[str, int],
                              covered: list[dt.date]) -> pd.DataFrame:
    """`refund_deltas` as its definition reads, one payment at a time: the oracle."""
    from recon.core.analysis import REFUND_DELTA_COLUMNS

    refund_rows = rows.loc[settled & (rows["transaction_type"] == cat.REFUND)]
    window = refunds.loc[refunds["refund_date"].isin(covered)
                         & refunds["status"].isin(cat.DONE_REFUND_STATUSES)]
    records = []
    for payment in sorted(set(refund_rows["merchant_invoice"])
                          | set(window["original_partner_reference_no"])):
        amounts = payments.loc[payments["partner_reference_no"] == payment, "amount"]
        mine = refunds.loc[refunds["original_partner_reference_no"] == payment]
        done = mine.loc[mine["status"].isin(cat.DONE_REFUND_STATUSES), "refund_amount"]
        lines = refund_rows.loc[refund_rows["merchant_invoice"] == payment]
        recorded = int(done.sum())
        as_settled = (refunded_before.get(payment, 0)
                      + sum(abs(int(g)) for g in lines["gross"]))
        records.append({
            "payment": payment,
            "payment_amount": None if amounts.empty or pd.isna(amounts.iloc[-1])
            else int(amounts.iloc[-1]),
            "refunded_in_records": recorded, "refunded_as_settled": as_settled,
            "delta": as_settled - recorded,
            "refunds_in_records": ", ".join(
                key if status in cat.DONE_REFUND_STATUSES else f"{key} ({status})"
                for key, status in zip(mine["partner_refund_no"], mine["status"], strict=True)),
            "file_lines": ", ".join(str(line) for line in lines["line_no"]),
        })
    if not records:  # an empty sheet of text columns
        return pd.DataFrame({c: pd.Series(dtype="object") for c in REFUND_DELTA_COLUMNS})
    return pd.DataFrame(records, columns=list(REFUND_DELTA_COLUMNS)).astype(
        {"payment_amount": "Int64", "refunded_in_records": "int64",
         "refunded_as_settled": "int64", "delta": "int64"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_refund_deltas_are_their_definition_payment_by_payment(data: Any) -> None:
    """Per payment: the refunds of the records and the file's settled refund rows, summed
    and listed in their order, whatever the keys, statuses, dates and amounts."""
    from recon.core.analysis import refund_deltas

    keys = [f"P{i}" for i in range(5)] + ["Ü-1", ""]
    draw = data.draw
    payments = payments_frame([(key, f"{draw(st.integers(1, 900))}.00", "00",
                                "2026-11-27 10:00:00")
                               for key in draw(st.lists(st.sampled_from(keys[:5]), unique=True))])
    refunds = refunds_frame([
        (f"RF{n}", draw(st.sampled_from(keys)), f"OVR{n}", f"{draw(st.integers(1, 500))}.00",
         draw(st.sampled_from(["00", "06", "03"])), draw(st.sampled_from(TIMES)))
        for n in range(draw(st.integers(0, 8)))])
    rows = rows_frame([refund_row(draw(st.sampled_from(keys)), f"{draw(st.integers(1, 500))}.00")
                       if draw(st.booleans()) else payment_row(draw(st.sampled_from(keys)), "1.00")
                       for _ in range(draw(st.integers(0, 8)))])
    settled = pd.Series(draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))),
                        index=rows.index, dtype=bool)
    before = draw(st.dictionaries(st.sampled_from(keys), st.integers(0, 900), max_size=3))
    covered = WorkingCalendar().covered_dates(S)
    pd.testing.assert_frame_equal(
        refund_deltas(rows, settled, payments, refunds, before, covered),
        _refund_deltas_one_by_one(rows, settled, payments, refunds, before, list(covered)))


@st.composite
def ledgers_of_other_dates(draw: Any, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Entries of earlier and later settlement dates as the matcher writes them: a payment
    row's (its invoice, which may be no record's, as settle key and original, the payment
    or nothing as record) and a refund row's (its RefundInvoice or OVOReferenceNo as
    settle key, a refund or nothing as record, its MerchantInvoice, which may be another
    payment's, as original)."""
    named = {row["merchant_invoice"] for row in data["rows"]}
    in_file = [p[0] for p in data["payments"] if p[0] in named]
    ghosts = sorted(named - {p[0] for p in data["payments"]})  # invoices of no record
    others = [p[0] for p in data["payments"] if p[0] not in named]
    refunds = [r[0] for r in data["refunds"]]
    references = [r[2] for r in data["refunds"]]
    # Keys no record or row names, as often as the named ones: an entry found through one
    # key alone shows whether the loader looks it up that way.
    elsewhere = ["RF-ELSEWHERE", "OVR-ELSEWHERE"] * max(1, len(refunds))
    days = [S - dt.timedelta(days=d) for d in (10, 3, 1)] + [S + dt.timedelta(days=d)
                                                          for d in (1, 4)]
    entries = []
    for line in range(2, 2 + draw(st.integers(min_value=0, max_value=10))):
        if draw(st.booleans()):  # mostly of payments the file does not name
            kind = cat.PAYMENT
            original = settle = draw(st.sampled_from([*others * 3, *in_file, *ghosts,
                                                      "ELSEWHERE"]))
            record = draw(st.sampled_from([original, original, ""]))
        else:  # mostly of payments the file names
            kind = cat.REFUND
            original = draw(st.sampled_from([*in_file * 3, *others, "ELSEWHERE"]))
            record = draw(st.sampled_from([*refunds, "", "RF-ELSEWHERE"]))
            settle = draw(st.sampled_from([*refunds, *references, *elsewhere]))
        entries.append({"merchant_id": "M001", "settlement_date": draw(st.sampled_from(days)),
                        "run_id": 1, "kind": kind, "settle_key": settle, "record_key": record,
                        "original_reference_no": original, "line_no": line,
                        "amount": Decimal(draw(st.integers(min_value=1, max_value=2000)))})
    return entries


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_the_ledger_loaded_matches_as_the_whole_ledger_would(
        tmp_path_factory: Any, drawn: st.DataObject) -> None:
    """The loader fetches only the entries of other dates that the file's keys and the
    records name; matching with those gives every result that matching with every entry
    of the merchant's other dates gives: categories, reasons, flags, the ledger written,
    missing items, refund deltas, counts and amounts."""
    from sqlalchemy import insert

    from recon.store.tables import recon_ledger

    data = drawn.draw(scenarios())
    entries = drawn.draw(ledgers_of_other_dates(data))
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'recon.db'}")
    init_db(engine)
    insert_records(engine, *to_records(data))
    if entries:
        with engine.begin() as conn:
            conn.execute(insert(recon_ledger), entries)
    ctx = MatchContext("M001", S, WorkingCalendar(), context().fee_rules)
    rows = rows_frame(data["rows"])
    inputs = load_run_inputs(engine, "M001", S, ctx.covered_dates, rows)
    engine.dispose()
    # The builder numbers the entries' lines from 2, as the strategy does.
    whole = ledger_frame([(e["settlement_date"], e["kind"], e["settle_key"], e["record_key"],
                           e["original_reference_no"], str(e["amount"])) for e in entries])
    loaded = match_settlement(rows, inputs.payments, inputs.refunds, inputs.ledger,
                              inputs.open_items, ctx)
    everything = match_settlement(rows, inputs.payments, inputs.refunds, whole,
                                  inputs.open_items, ctx)
    pd.testing.assert_frame_equal(loaded.rows, everything.rows)
    pd.testing.assert_frame_equal(loaded.missing, everything.missing)
    pd.testing.assert_frame_equal(loaded.refund_deltas, everything.refund_deltas)
    for column in ("kind", "settle_key", "record_key", "original_reference_no", "line_no"):
        assert list(loaded.ledger[column]) == list(everything.ledger[column])
    assert loaded.counts == everything.counts and loaded.amounts == everything.amounts


@st.composite
def tangled(draw: Any) -> dict[str, Any]:
    """A scenario whose payments are tied together: refund rows naming another payment's
    refund by RefundInvoice or OVOReferenceNo, refund rows of one settle key under two
    invoices, entries of other dates of another payment's refunds, and open items."""
    data = draw(scenarios())
    invoices = [p[0] for p in data["payments"]] + ["GHOST0", ""]
    refunds = [r[0] for r in data["refunds"]] + ["RF-NONE"]
    references = [r[2] for r in data["refunds"]] + ["OVR-NONE"]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        data["rows"].insert(draw(st.integers(min_value=0, max_value=len(data["rows"]))),
                            refund_row(draw(st.sampled_from(invoices)),
                                       f"{draw(st.integers(min_value=1, max_value=1500))}.00",
                                       draw(st.sampled_from([*refunds, ""])),
                                       draw(st.sampled_from([*references, ""]))))
    data["ledger"] = draw(ledgers_of_other_dates(data))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):  # none the matcher writes
        settle, record, original = (draw(st.sampled_from(invoices)) for _ in range(3))
        data["ledger"].append({"settlement_date": S - dt.timedelta(days=1), "kind": cat.PAYMENT,
                               "settle_key": settle, "record_key": record,
                               "original_reference_no": original, "amount": Decimal(1)})
    keys = [(cat.PAYMENT, p[0]) for p in data["payments"]] + [
        (cat.REFUND, r[0]) for r in data["refunds"]] + [(cat.REFUND, "RF-NONE")]
    chosen = draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))
    data["open_items"] = [(i, S - dt.timedelta(days=draw(st.sampled_from([1, 3, 3]))), kind,
                           key, "100.00") for i, (kind, key) in enumerate(chosen, start=1)]
    return data


def _tangled_frames(data: dict[str, Any]) -> tuple[pd.DataFrame, ...]:
    """A `tangled()` scenario's rows, payments, refunds, ledger and open items."""
    ledger = ledger_frame([(e["settlement_date"], e["kind"], e["settle_key"], e["record_key"],
                            e["original_reference_no"], str(e["amount"]))
                           for e in data["ledger"]])
    return (rows_frame(data["rows"]), payments_frame(data["payments"]),
            refunds_frame(data["refunds"]), ledger, open_items_frame(data["open_items"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tangled(), st.integers(min_value=2, max_value=5))
def test_matching_in_parts_gives_what_matching_the_whole_gives(
        data: dict[str, Any], parts: int) -> None:
    """Every row's category, reason, flags and record, the ledger, missing items, open
    items and their closures, refund deltas, counts, amounts and totals: the same when
    the payments' groups are matched a part at a time."""
    from recon.inparts.parts import match_in_parts

    inputs = _tangled_frames(data)
    whole = match_settlement(*inputs, context())
    seen = []
    in_parts = match_in_parts(*inputs, context(), parts, on_ledger=seen.append)
    pd.testing.assert_frame_equal(in_parts.rows, whole.rows)
    for name in ("missing", "closures", "open_items", "refund_deltas", "all_open_items"):
        pd.testing.assert_frame_equal(getattr(in_parts, name), getattr(whole, name), obj=name)
    for column in Ledger.COLUMNS:
        assert list(in_parts.ledger[column]) == list(whole.ledger[column])
    assert [len(ledger) for ledger in seen] == [len(whole.ledger)]
    assert (in_parts.counts, in_parts.amounts, in_parts.totals, in_parts.record_totals) == (
        whole.counts, whole.amounts, whole.totals, whole.record_totals)


def _labels_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as text: a part's categories are its own values."""
    return frame.astype({name: "str" for name, dtype in frame.dtypes.items()
                         if isinstance(dtype, pd.CategoricalDtype)})


def cells_of(path: Path) -> dict[str, list[tuple]]:
    from openpyxl import load_workbook

    book = load_workbook(path)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in book.worksheets}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tangled(), st.integers(min_value=1, max_value=5))
def test_the_report_of_parts_taken_one_at_a_time_is_the_whole_match_s(
        tmp_path_factory: Any, data: dict[str, Any], parts: int) -> None:
    """The flagged rows in file order, missing items, open items, closures, refund deltas,
    counts, amounts and totals, the summary, the store's exception rows and every cell of
    the workbook: the same from the parts' results, each part's kept only for what is
    reported, as from the whole match."""
    from recon.core.match import conform_inputs
    from recon.inparts.parts import matched_parts, reported_of_parts
    from recon.report.summary import build_summary
    from recon.report.workbook import write_exception_workbook
    from recon.store.persist import EXCEPTION_COLUMNS, exception_tables

    inputs = conform_inputs(*_tangled_frames(data))
    whole = match_settlement(*inputs, context())
    results = (result for result, _ in matched_parts(*inputs, context(), parts))
    try:
        reported = reported_of_parts(results, inputs[4], context())
    except ValueError:  # nothing in any part: nothing to report
        assert whole.rows.empty and whole.missing.empty and whole.closures.empty
        return
    flagged = whole.rows.loc[whole.rows["category"] != cat.MATCHED].reset_index(drop=True)
    pd.testing.assert_frame_equal(_labels_as_text(reported.rows), _labels_as_text(flagged))
    for name in ("missing", "closures", "open_items", "refund_deltas", "all_open_items"):
        pd.testing.assert_frame_equal(getattr(reported, name), getattr(whole, name), obj=name)
    assert len(reported.ledger) == 0
    assert (reported.counts, reported.amounts, reported.totals, reported.record_totals) == (
        whole.counts, whole.amounts, whole.totals, whole.record_totals)
    summary = build_summary(whole, "f.csv", "0" * 64, "csv", True)
    assert build_summary(reported, "f.csv", "0" * 64, "csv", True) == summary
    def exceptions(result: Any, batch_rows: int) -> pa.Table:
        return pa.concat_tables([EXCEPTION_COLUMNS.empty_table(),
                                 *exception_tables(result, "M001", S, 7, batch_rows)])

    assert exceptions(reported, 3).equals(exceptions(whole, 2))
    folder = tmp_path_factory.mktemp("books")
    assert cells_of(write_exception_workbook(reported, summary, folder / "parts.xlsx")) == cells_of(
        write_exception_workbook(whole, summary, folder / "whole.xlsx"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tangled(), st.integers(min_value=1, max_value=5), st.integers(min_value=2, max_value=4),
       st.integers(min_value=1, max_value=4))
def test_flagged_rows_on_disk_report_as_the_whole_match_s(
        tmp_path_factory: Any, data: dict[str, Any], parts: int, max_rows: int,
        batch: int) -> None:
    """Each part's flagged rows written to disk by category (`recon.inparts.flagged`) and read
    back a few at a time, from any row on, are the whole match's in file order; and the
    workbook (sheets so short that categories continue in CSV), its CSV files and the
    store's exception rows made from them are the whole match's."""
    import dataclasses

    from recon.core.match import conform_inputs
    from recon.core.result import FLAGGED_COLUMNS
    from recon.inparts.flagged import FlaggedWriter
    from recon.inparts.parts import matched_parts, reported_of_parts
    from recon.report.summary import build_summary
    from recon.report.workbook import WorkbookOptions, write_exception_workbook
    from recon.store.persist import EXCEPTION_COLUMNS, exception_tables

    inputs = conform_inputs(*_tangled_frames(data))
    whole = match_settlement(*inputs, context())
    results = [result for result, _ in matched_parts(*inputs, context(), parts)]
    if not results:
        return
    folder = tmp_path_factory.mktemp("flagged")
    writer = FlaggedWriter(folder / "flagged")
    for result in results:
        writer.add(result.rows.loc[result.rows["category"] != cat.MATCHED])
    reported = reported_of_parts(iter(results), inputs[4], context())
    on_disk = dataclasses.replace(reported, rows=reported.rows.iloc[:0],
                                  flagged=writer.finish())

    def plain(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.loc[:, list(FLAGGED_COLUMNS)].astype(object).reset_index(drop=True)
        return frame.where(frame.notna(), None)  # a missing date: None or NaN alike

    for name in cat.ROW_CATEGORIES:
        expected = whole.rows.loc[whole.rows["category"] == name] if name != cat.MATCHED \
            else whole.rows.iloc[:0]
        assert on_disk.flagged.counts[name] == len(expected)
        for start in range(len(expected) + 1):
            got = list(on_disk.flagged.batches(name, batch, start))
            assert all(len(chunk) <= batch for chunk in got)
            pd.testing.assert_frame_equal(
                plain(pd.concat([on_disk.flagged.head(name, 0), *got])),
                plain(expected.iloc[start:]), check_dtype=False, obj=f"{name} from {start}")

    def exceptions(result: Any) -> list[str]:
        return sorted(map(repr, pa.concat_tables(
            [EXCEPTION_COLUMNS.empty_table(), *exception_tables(result, "M001", S, 7, batch)]
        ).to_pylist()))

    assert exceptions(on_disk) == exceptions(whole)
    summary = build_summary(whole, "f.csv", "0" * 64, "csv", True)
    options = WorkbookOptions(max_rows=max_rows)
    books = {}
    for label, result in (("disk", on_disk), ("whole", whole)):
        (folder / label).mkdir()
        books[label] = write_exception_workbook(result, summary, folder / label / "r.xlsx",
                                                options=options)
    assert cells_of(books["disk"]) == cells_of(books["whole"])
    overflow = {label: {p.name: p.read_bytes() for p in (folder / label).glob("*.csv")}
                for label in books}
    assert overflow["disk"] == overflow["whole"]
