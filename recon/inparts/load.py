"""The records of a run in parts: the payment groups from what ties two payments, and the
window's payments spilled to disk by the part of their group."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from recon.core.schemas import PAYMENT_LABELS, PAYMENTS, conform
from recon.inparts.parts import part_numbers, payment_groups
from recon.inparts.spill import PartWriter, disk_schema, disk_table, read_part, spill_folder
from recon.store.load import (
    WINDOW_BATCH_ROWS,
    TieRecords,
    load_tie_records,
    window_payment_batches,
)


@dataclass(frozen=True)
class Ties(TieRecords):
    """What a run in parts loads before its parts (`load_ties`): the payment groups, and
    the records they come from (`load_tie_records`), loaded whole."""

    groups: dict[str, str]  # payment_groups of the records


def load_ties(engine: Engine, merchant_id: str, settlement_date: dt.date,
              covered: Sequence[dt.date], refund_rows: pd.DataFrame) -> Ties:
    """The payment groups of a run in parts, before its parts are loaded, from the file's
    refund rows and what can tie two payments (`payment_groups`). More than the whole run
    loads, so the groups are those of the whole run or coarser: a part still holds whole
    groups."""
    found = load_tie_records(engine, merchant_id, settlement_date, covered, refund_rows)
    return Ties(**{field.name: getattr(found, field.name) for field in fields(found)},
                groups=payment_groups(found.refund_rows, found.refunds, found.ledger))


@dataclass(frozen=True)
class SpilledPayments:
    """The window's payments on disk by part (`spill_window_payments`)."""

    paths: list[Path]
    counts: list[int]

    def payments(self, part: int) -> pd.DataFrame:
        """The part's payments, of the PAYMENTS types (`conform`)."""
        return conform(read_part(self.paths[part], PAYMENT_LABELS), PAYMENTS, "payments")


def spill_window_payments(engine: Engine, merchant_id: str, covered: Sequence[dt.date],
                          folder: Path, parts: int, groups: dict[str, str],
                          batch_rows: int = WINDOW_BATCH_ROWS) -> SpilledPayments:
    """The window's payments into `parts` files under `folder`, each payment in the part of
    its group (`part_numbers`), a batch from the database at a time. `folder` is made here
    (it must not exist) and removed when the spill fails: `StoreError` for the database,
    `SpillFailed` for the disk."""
    with spill_folder(folder, "the window's payments"), PartWriter(
            folder, "payments", parts, disk_schema(PAYMENTS)) as writer:
        for frame in window_payment_batches(engine, merchant_id, covered, batch_rows):
            table = disk_table(frame, PAYMENTS, PAYMENT_LABELS)
            numbers = part_numbers(frame["partner_reference_no"], groups, parts)
            del frame
            writer.add(table, numbers)
    return SpilledPayments(writer.paths, writer.counts)
