"""A day's run in parts: the file and the window's payments on disk, one part in memory
at a time, with the result of the whole run.

1. `spill_in_parts`: the file is read a batch at a time to disk (`spill_settlement_file`);
   once its refund rows are known, `load_ties` loads what can tie two payments and gives
   the payment groups, and the rows go to the files of their parts.
2. `load_in_parts`: the window's payments go to disk in the same parts
   (`spill_window_payments`); then each part's rows and payments are read back and its
   records are looked up by its keys (`load_part_records`). The payments found outside
   the window, the refunds and the ledger entries of every part (a few percent of a day)
   are then placed by the part of their payment, as `match_in_parts` places them: a part's
   lookups may find another part's entry, never one the whole run would not load.
3. `match_in_parts_on_disk`: each part's rows, payments and records are matched
   (`match_settlement`), its ledger handed on as it is matched, its flagged rows written
   to disk (`recon.inparts.flagged`), and the results kept only for what is reported
   (`reported_of_parts`): the summary, the workbook and the exceptions are the whole
   run's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from recon.core import categories as cat
from recon.core.errors import StoreError
from recon.core.match import conform_inputs, match_settlement
from recon.core.result import Ledger, MatchContext, ReconResult
from recon.core.schemas import PAYMENT_LABELS, concat_labelled, empty_frame, found_in, text_array
from recon.formats.declaration import DEFAULT_LIMITS, FileFormat, ReadLimits
from recon.inparts.flagged import FlaggedWriter
from recon.inparts.load import SpilledPayments, Ties, load_ties, spill_window_payments
from recon.inparts.parts import open_item_payments, part_numbers, payment_groups, reported_of_parts
from recon.inparts.spill import SpilledFile, spill_settlement_file
from recon.store.load import Window, load_part_records
from recon.system.paths import within

log = logging.getLogger(__name__)

#: The file's batches on their way to the parts: smaller than the reader's own, for a
#: lower peak at no cost in time (figures: `bench/ROUNDS.md`, the constants).
PART_BATCH_BYTES = 64 << 20


def spill_in_parts(engine: Engine, path: Path, fmt: FileFormat, ctx: MatchContext,
                   folder: Path, parts: int, name: str | None = None,
                   limits: ReadLimits = DEFAULT_LIMITS) -> tuple[SpilledFile, Ties]:
    """The file's rows on disk in `parts` parts under `folder` (made here), by the payment
    groups `load_ties` gives once the file's refund rows are read."""
    ties: list[Ties] = []

    def groups_of(refund_rows: pd.DataFrame) -> dict[str, str]:
        ties.append(load_ties(engine, ctx.merchant_id, ctx.settlement_date,
                              ctx.covered_dates, refund_rows))
        return ties[0].groups

    spilled = spill_settlement_file(path, fmt, ctx.settlement_date, folder, parts, groups_of,
                                    name=name, batch_bytes=PART_BATCH_BYTES, limits=limits)
    return spilled, ties[0]


@dataclass(frozen=True)
class PartInputs:
    """What each part is matched with: its rows and window payments on disk, and the
    records found outside the window, the refunds, ledger entries and open items of every
    part, with the part of each."""

    spilled: SpilledFile
    payments: SpilledPayments
    extra: pd.DataFrame  # payments outside the window (PAYMENTS)
    refunds: pd.DataFrame
    ledger: pd.DataFrame
    open_items: pd.DataFrame
    placed: dict[str, np.ndarray]  # the part of each row of extra, refunds, ledger, open_items

    def part(self, number: int) -> tuple[pd.DataFrame, ...]:
        """The part's rows, payments, refunds, ledger entries and open items."""
        taken = {name: np.flatnonzero(where == number) for name, where in self.placed.items()}
        window = self.payments.payments(number)
        extra = self.extra.take(taken["extra"])
        payments = (concat_labelled([window, extra], PAYMENT_LABELS) if len(extra) and len(window)
                    else extra if len(extra) else window)
        return (self.spilled.rows(number), payments, self.refunds.take(taken["refunds"]),
                self.ledger.take(taken["ledger"]), self.open_items.take(taken["open_items"]))


def load_in_parts(engine: Engine, ctx: MatchContext, spilled: SpilledFile, ties: Ties,
                  folder: Path) -> PartInputs:
    """The window's payments on disk in the file's parts (under `folder`, made here), and
    every part's records looked up by its keys, then placed by their payment's part."""
    parts, groups = spilled.parts, ties.groups
    merchant, day = ctx.merchant_id, ctx.settlement_date
    started = time.perf_counter()
    window = spill_window_payments(engine, merchant, ctx.covered_dates, folder, parts, groups)
    log.info("the window's payments on disk: %s in %d parts (%.1f s)",
             f"{sum(window.counts):,}", parts, time.perf_counter() - started)
    refunds_at = part_numbers(ties.window_refunds["original_partner_reference_no"], groups,
                              parts)
    ledger_at = part_numbers(ties.window_ledger["original_reference_no"], groups, parts)
    open_at = part_numbers(open_item_payments(ties.open_items, ties.refunds), groups, parts)
    extra, refunds, ledger = [], [], []
    for part in range(parts):
        rows, payments = spilled.rows(part), window.payments(part)
        found, part_refunds, part_ledger = load_part_records(
            engine, merchant, day, rows, Window(
                payments, ties.window_refunds.loc[refunds_at == part],
                ties.window_ledger.loc[ledger_at == part]),
            ties.open_items.loc[open_at == part])
        outside = ~found_in(text_array(found["partner_reference_no"]),
                            text_array(payments["partner_reference_no"]))
        extra.append(found.loc[outside])
        refunds.append(part_refunds)
        ledger.append(part_ledger)
        del rows, payments, found
        log.info("part %d of %d: records loaded (%.1f s)", part + 1, parts,
                 time.perf_counter() - started)
    kept = [frame for frame in extra if len(frame)]
    extra_payments = (concat_labelled(kept, PAYMENT_LABELS).drop_duplicates(
        "partner_reference_no") if kept else extra[0])
    all_refunds = pd.concat(refunds, ignore_index=True).drop_duplicates("partner_refund_no")
    all_ledger = pd.concat(ledger, ignore_index=True).drop_duplicates(
        ["settlement_date", "line_no"])
    check_groups(ties, all_refunds, all_ledger, parts)
    return PartInputs(
        spilled=spilled, payments=window, extra=extra_payments.reset_index(drop=True),
        refunds=all_refunds.reset_index(drop=True), ledger=all_ledger.reset_index(drop=True),
        open_items=ties.open_items,
        placed={
            "extra": part_numbers(extra_payments["partner_reference_no"], groups, parts),
            "refunds": part_numbers(all_refunds["original_partner_reference_no"], groups,
                                    parts),
            "ledger": part_numbers(all_ledger["original_reference_no"], groups, parts),
            "open_items": part_numbers(open_item_payments(ties.open_items, all_refunds),
                                       groups, parts),
        })


def check_groups(ties: Ties, refunds: pd.DataFrame, ledger: pd.DataFrame,
                 parts: int) -> None:
    """The parts' records tie no two payments of different parts: else the database
    changed between the ties' load and the parts' (another date's run wrote meanwhile)."""
    found = payment_groups(ties.refund_rows, refunds, ledger)
    if not found:
        return
    keys = pd.Series(list(found), dtype="str")
    roots = pd.Series([found[key] for key in keys], dtype="str")
    apart = (part_numbers(keys, ties.groups, parts)
             != part_numbers(roots, ties.groups, parts))
    if apart.any():
        key = keys[int(np.flatnonzero(apart)[0])]
        raise StoreError(f"the ledger or the refunds changed while the run loaded them (payment "
                         f"{key} is now tied to {found[key]}): run the date again")


def match_in_parts_on_disk(inputs: PartInputs, ctx: MatchContext,
                           on_ledger: Callable[[Ledger], None], folder: Path) -> ReconResult:
    """Each part matched alone, its ledger given to `on_ledger` as it is matched and its
    flagged rows written under `folder` (made here); the result of the whole run
    (`reported_of_parts`), its flagged rows on disk (`ReconResult.flagged`)."""
    flagged = FlaggedWriter(folder)

    def kept(results: Iterator[ReconResult]) -> Iterator[ReconResult]:
        for result in results:
            rows = result.rows
            flagged.add(rows.loc[rows["category"] != cat.MATCHED])
            # Fresh: an empty slice of an Arrow-backed text column keeps its buffers.
            yield dataclasses.replace(result, rows=empty_frame(rows.dtypes.to_dict()))
            del result, rows

    reported = reported_of_parts(kept(_matched(inputs, ctx, on_ledger)), inputs.open_items, ctx)
    return dataclasses.replace(reported, flagged=flagged.finish())


def _matched(inputs: PartInputs, ctx: MatchContext,
             on_ledger: Callable[[Ledger], None]) -> Iterator[ReconResult]:
    """Each part's result; its ledger goes to `on_ledger` in a thread of its own while the
    next part is matched (one part's ledger at a time: its errors are raised here)."""
    parts = inputs.spilled.parts
    started = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="recon-ledger-part") as pool:
        writing: Future[None] | None = None
        for part in range(parts):
            rows, payments, refunds, ledger, open_items = conform_inputs(*inputs.part(part))
            if not any(len(frame) for frame in (rows, payments, refunds, open_items)):
                continue
            result = match_settlement(rows, payments, refunds, ledger, open_items, ctx)
            del rows, payments, refunds, ledger, open_items
            if writing is not None:
                writing.result()
            writing = pool.submit(on_ledger, result.ledger)
            log.info("part %d of %d: %s rows matched, %s exceptions (%.1f s)", part + 1,
                     parts, f"{len(result.rows):,}", f"{result.exceptions:,}",
                     time.perf_counter() - started)
            yield result
            del result
        if writing is not None:
            writing.result()


def in_parts_folder(root: Path, merchant_id: str, day: dt.date, token: str) -> Path:
    """A run's own folder for its parts under `root`."""
    return within(root, f"{in_parts_prefix(merchant_id, day)}{token}")


def in_parts_prefix(merchant_id: str, day: dt.date) -> str:
    """What the parts' folders of every run of (merchant, day) begin with."""
    return f"{merchant_id}_{day:%Y%m%d}_"

