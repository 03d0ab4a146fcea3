"""Matching a settlement file in parts that share no key.

Everything the matcher compares belongs to a payment: a payment row and its payment by
the invoice; a refund row, the refunds and the refund rows of the payment its invoice
names; an entry of another date by its original payment; an open item by its record.
Only a few things tie two payments together, and all of them are refunds:

- a refund row whose RefundInvoice or OVOReferenceNo names a refund of another payment;
- two refund rows of one settle key under different invoices (the later is a duplicate);
- an entry of another date whose settle key a refund row of another payment has, or
  whose record is a refund of another payment.

`payment_groups` finds those ties (it reads refund rows, refunds and ledger entries of
refunds: a few percent of a file) and joins their payments into one group. `part_numbers`
puts each payment's group in one of n parts by a hash of its least key, so every row,
record, entry and open item goes to the part of its payment's group, and matching each
part alone gives what matching the whole gives (`match_in_parts`, property-tested
against `match_settlement`). This is what lets a run hold one part at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon.core import categories as cat
from recon.core.analysis import all_open_items
from recon.core.found import refund_keys
from recon.core.match import conform_inputs, match_settlement
from recon.core.result import FlaggedFrame, Ledger, MatchContext, ReconResult
from recon.core.schemas import (
    concat_labelled,
    positions_in,
    text_array,
)


def payment_groups(rows: pd.DataFrame, refunds: pd.DataFrame,
                   ledger: pd.DataFrame) -> dict[str, str]:
    """The payment keys tied to another payment's, each with its group's least key; a key
    not in the answer is a group of its own. `ledger`: the entries of other dates."""
    refund_rows = rows.loc[rows["transaction_type"] == cat.REFUND,
                           ["merchant_invoice", "refund_invoice", "ovo_reference_no"]]
    refund_rows = refund_rows.assign(settle_key=refund_keys(refund_rows))
    owners = refunds.loc[:, ["partner_refund_no", "refund_no", "original_partner_reference_no"]]
    ties: list[pd.DataFrame] = []

    def tie(frame: pd.DataFrame, one: str, other: str) -> None:
        ties.append(pd.DataFrame({"one": frame[one].astype("str").to_numpy(dtype=object),
                                  "other": frame[other].astype("str").to_numpy(dtype=object)}))

    # A refund row and the refunds its keys name, whoever's payment they are.
    for column, key in (("refund_invoice", "partner_refund_no"),
                        ("ovo_reference_no", "refund_no")):
        named = refund_rows.loc[refund_rows[column] != ""]
        tie(named.merge(owners.loc[owners[key] != ""], left_on=column, right_on=key),
            "merchant_invoice", "original_partner_reference_no")
    # Refund rows of one settle key: each with the first of them.
    keyed = refund_rows.loc[refund_rows["settle_key"] != ""]
    first = keyed.drop_duplicates("settle_key")
    tie(keyed.merge(first, on="settle_key", suffixes=("", "_first")),
        "merchant_invoice", "merchant_invoice_first")
    # Entries of other dates: a payment's by its settle key and record (both a payment's
    # key, its original's as the matcher writes them: only the others are taken); a
    # refund's by the refund rows of its settle key and by the refund it records.
    entries = ledger.loc[:, ["kind", "settle_key", "record_key", "original_reference_no"]]
    original = entries["original_reference_no"]
    of_payments = entries.loc[(entries["kind"] == cat.PAYMENT) & (
        (entries["settle_key"] != original)
        | ((entries["record_key"] != original) & (entries["record_key"] != "")))]
    tie(of_payments, "original_reference_no", "settle_key")
    tie(of_payments.loc[of_payments["record_key"] != ""], "original_reference_no", "record_key")
    of_refunds = entries.loc[entries["kind"] == cat.REFUND]
    tie(of_refunds.merge(keyed, on="settle_key"), "original_reference_no", "merchant_invoice")
    tie(of_refunds.loc[of_refunds["record_key"] != ""].merge(
        owners, left_on="record_key", right_on="partner_refund_no"),
        "original_reference_no", "original_partner_reference_no")

    pairs = pd.concat(ties, ignore_index=True)
    pairs = pairs.loc[pairs["one"] != pairs["other"]].drop_duplicates()
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.get(key, key) != key:
            parent[key] = parent.get(parent[key], parent[key])  # halve the path
            key = parent[key]
        return key

    for one, other in zip(pairs["one"].tolist(), pairs["other"].tolist(), strict=True):
        a, b = root(one), root(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {key: root(key) for key in {*pairs["one"].tolist(), *pairs["other"].tolist()}}


def part_numbers(keys: pd.Series, groups: dict[str, str], parts: int) -> np.ndarray:
    """The part (0 to parts - 1) of each payment key: its group's least key, hashed."""
    values = text_array(keys)
    if groups:
        found, at = positions_in(values, text_array(list(groups)))
        least = text_array(list(groups.values())).take(pa.array(np.where(found, at, 0)))
        values = pc.if_else(pa.array(found), least, values) if len(least) else values
    # DuckDB's hash, on both cores, several times faster than pandas' hash_array of the
    # keys as Python strings. The same key hashes the same in every process of one
    # DuckDB version, which is all a run needs.
    import duckdb

    database = duckdb.connect(":memory:")
    try:
        database.register("recon_keys", pa.table({"k": values}))
        numbers = database.execute(f"SELECT hash(k) % {int(parts)} AS part FROM recon_keys"
                                   ).fetchnumpy()["part"]
    finally:
        database.close()
    return np.asarray(numbers, dtype=np.int64)


def open_item_payments(open_items: pd.DataFrame, refunds: pd.DataFrame) -> pd.Series:
    """The payment each open item belongs to: a payment's its own key, a refund's its
    original payment where the refund is among the records (else its own key: no row can
    settle a refund that is not)."""
    owners = refunds.drop_duplicates("partner_refund_no").set_index("partner_refund_no")
    original = owners["original_partner_reference_no"]
    key = open_items["record_key"]
    of_refund = (open_items["kind"] == cat.REFUND) & key.isin(original.index)
    return key.where(~of_refund, key.map(original)).astype("str")


def match_in_parts(
    rows: pd.DataFrame,
    payments: pd.DataFrame,
    refunds: pd.DataFrame,
    ledger: pd.DataFrame,
    open_items: pd.DataFrame,
    ctx: MatchContext,
    parts: int,
    on_ledger: Callable[[Ledger], None] | None = None,
) -> ReconResult:
    """`match_settlement` of the inputs, one part of their payment groups at a time: the
    same result. `on_ledger` is given the whole ledger once every part is matched."""
    rows, payments, refunds, ledger, open_items = conform_inputs(
        rows, payments, refunds, ledger, open_items)
    results: list[ReconResult] = []
    at: list[np.ndarray] = []  # each result's rows: their positions in the file
    for result, positions in matched_parts(rows, payments, refunds, ledger, open_items, ctx,
                                           parts):
        results.append(result)
        at.append(positions)
    if not results:
        return match_settlement(rows, payments, refunds, ledger, open_items, ctx, on_ledger)
    result = _combined(results, at, open_items, ctx)
    if on_ledger is not None:
        on_ledger(result.ledger)
    return result


def matched_parts(
    rows: pd.DataFrame,
    payments: pd.DataFrame,
    refunds: pd.DataFrame,
    ledger: pd.DataFrame,
    open_items: pd.DataFrame,
    ctx: MatchContext,
    parts: int,
) -> Iterator[tuple[ReconResult, np.ndarray]]:
    """Each part's `match_settlement`, with the positions of its rows in the file, for the
    parts that hold a row, payment, refund or open item; of inputs conformed already
    (`conform_inputs`)."""
    groups = payment_groups(rows, refunds, ledger)
    placed = {
        "rows": part_numbers(rows["merchant_invoice"], groups, parts),
        "payments": part_numbers(payments["partner_reference_no"], groups, parts),
        "refunds": part_numbers(refunds["original_partner_reference_no"], groups, parts),
        "ledger": part_numbers(ledger["original_reference_no"], groups, parts),
        "open_items": part_numbers(open_item_payments(open_items, refunds), groups, parts),
    }
    inputs = {"rows": rows, "payments": payments, "refunds": refunds, "ledger": ledger,
              "open_items": open_items}
    for part in range(parts):
        taken = {name: np.flatnonzero(placed[name] == part) for name in inputs}
        if not any(len(taken[name]) for name in ("rows", "payments", "refunds", "open_items")):
            continue
        part_of = {name: frame.take(taken[name]) for name, frame in inputs.items()}
        yield (match_settlement(part_of["rows"], part_of["payments"], part_of["refunds"],
                                part_of["ledger"], part_of["open_items"], ctx), taken["rows"])


def reported_of_parts(results: Iterable[ReconResult], open_items: pd.DataFrame,
                      ctx: MatchContext) -> ReconResult:
    """The parts' results, taken one at a time, as the one result the summary, the
    workbook and the store's exceptions read: what they read of the whole match's result,
    with of each part only its flagged rows kept (a part's matched rows and ledger are let
    go as the next part comes; its ledger is written as it is matched). `rows` are the
    flagged rows, in file order; the ledger has no entries. `open_items`: every part's,
    as the parts were given them."""
    kept: list[ReconResult] = []
    for result in results:
        flagged = result.rows.loc[result.rows["category"] != cat.MATCHED]
        kept.append(dataclasses.replace(result, rows=flagged, ledger=_no_entries(flagged)))
        del result, flagged
    if not kept:
        raise ValueError("no part was matched")
    rows = _stacked([r.rows for r in kept])
    rows = rows.take(np.argsort(rows["line_no"].to_numpy(), kind="stable")).reset_index(
        drop=True)
    return _joined(kept, rows, _no_entries(rows), open_items, ctx)


def _no_entries(rows: pd.DataFrame) -> Ledger:
    return Ledger(kind=rows["transaction_type"], settle_key=rows["settle_key"],
                  record_key=rows["record_key"], original_reference_no=rows["merchant_invoice"],
                  amount=rows["gross"].abs(), line_no=rows["line_no"],
                  at=np.zeros(0, dtype=np.intp))


def _combined(results: list[ReconResult], at: list[np.ndarray], open_items: pd.DataFrame,
              ctx: MatchContext) -> ReconResult:
    """One result of the parts' results, as the whole match would have made it."""
    positions = np.concatenate(at)
    back = np.empty(len(positions), dtype=np.intp)  # the stacked row of each file position
    back[positions] = np.arange(len(positions))
    rows = _stacked([r.rows for r in results]).take(back).reset_index(drop=True)
    settled = np.sort(np.concatenate([where[r.ledger.at] for r, where in
                                      zip(results, at, strict=True)]))
    ledger = Ledger(kind=rows["transaction_type"], settle_key=rows["settle_key"],
                    record_key=rows["record_key"],
                    original_reference_no=rows["merchant_invoice"],
                    amount=rows["gross"].abs(), line_no=rows["line_no"], at=settled)
    return _joined(results, rows, ledger, open_items, ctx)


def _joined(results: list[ReconResult], rows: pd.DataFrame, ledger: Ledger,
            open_items: pd.DataFrame, ctx: MatchContext) -> ReconResult:
    """The parts' results as one, with `rows` and `ledger` made of theirs."""

    def in_given_order(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
        """Open items or closures in the order the open items were given."""
        frame = _stacked(list(frames))
        order = pd.Index(open_items["exception_id"]).get_indexer(frame["exception_id"])
        return frame.take(np.argsort(order, kind="stable")).reset_index(drop=True)

    still_open = in_given_order(r.open_items for r in results).sort_values(
        ["opened_date", "record_key"]).reset_index(drop=True)
    missing = _stacked([r.missing for r in results]).sort_values(
        ["record_date", "kind", "record_key"]).reset_index(drop=True)
    deltas = _stacked([r.refund_deltas for r in results]).sort_values(
        "payment", kind="stable").reset_index(drop=True)
    record_totals: dict[str, int | None] = {}
    for name in results[0].record_totals:
        values = [r.record_totals[name] for r in results]
        record_totals[name] = None if None in values else sum(v for v in values if v is not None)
    return ReconResult(
        merchant_id=ctx.merchant_id,
        settlement_date=ctx.settlement_date,
        covered_dates=ctx.covered_dates,
        rows=rows,
        flagged=FlaggedFrame(rows),
        missing=missing,
        ledger=ledger,
        closures=in_given_order(r.closures for r in results),
        open_items=still_open,
        counts={name: sum(r.counts[name] for r in results) for name in results[0].counts},
        amounts={name: sum(r.amounts[name] for r in results) for name in results[0].amounts},
        totals={name: sum(r.totals[name] for r in results) for name in results[0].totals},
        record_totals=record_totals,
        refund_deltas=deltas,
        all_open_items=all_open_items(still_open, missing, ctx.settlement_date),
    )


def _stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts' frames one after another (fresh positions), the empty ones left out (an
    empty frame's columns may be of other types), each categorical one of every part's
    values, sorted, as the matcher's own categoricals are."""
    filled = [frame for frame in frames if len(frame)] or frames[:1]
    return concat_labelled(filled, filled[0].columns, sort_categories=True)
