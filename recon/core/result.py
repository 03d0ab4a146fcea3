"""What a match is given and gives: its context, the ledger a file writes, the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.core.calendar import WorkingCalendar
from recon.core.fees import FeeRules


class FlaggedSource(Protocol):
    """Flagged rows kept elsewhere than in `ReconResult.rows` (a run in parts keeps them on
    disk): how many of each category, the first rows of one, and all of them in file
    order, a batch at a time. The matching does not know where they are kept."""

    counts: dict[str, int]

    def head(self, category: str, rows: int) -> pd.DataFrame: ...

    def batches(self, category: str, rows: int, start: int = 0
                ) -> Iterator[pd.DataFrame]: ...


@dataclass(frozen=True)
class MatchContext:
    merchant_id: str
    settlement_date: dt.date
    calendar: WorkingCalendar
    fee_rules: FeeRules = field(default_factory=FeeRules)
    refund_window_days: int = 60

    @property
    def covered_dates(self) -> tuple[dt.date, ...]:
        return tuple(self.calendar.covered_dates(self.settlement_date))


@dataclass(frozen=True)
class Ledger:
    """What this file settles: an entry per settled row (its kind, settle key, record key,
    original payment, amount and line), named by the row's position among the file's
    rows. The columns are the rows' own, taken only where they are read: at 10M rows a
    copy of them took 0.9 GB and 3 s while the rows were still held."""

    kind: pd.Series  # the rows' columns, a value per row of the file
    settle_key: pd.Series
    record_key: pd.Series
    original_reference_no: pd.Series
    amount: pd.Series  # the settled amount: the row's gross without its sign
    line_no: pd.Series
    at: np.ndarray  # the settled rows' positions, in file order

    COLUMNS = ("kind", "settle_key", "record_key", "original_reference_no", "amount",
               "line_no")

    @classmethod
    def of(cls, entries: pd.DataFrame) -> Ledger:
        """A ledger of the `entries` (a frame of its COLUMNS), each one settled."""
        return cls(**{name: entries[name].reset_index(drop=True) for name in cls.COLUMNS},
                   at=np.arange(len(entries)))

    def __len__(self) -> int:
        return len(self.at)

    def __getitem__(self, name: str) -> pd.Series:
        """One column of the entries, in file order."""
        if name not in self.COLUMNS:
            raise KeyError(name)
        return getattr(self, name).take(self.at).reset_index(drop=True)


@dataclass(frozen=True)
class ReconResult:
    """Everything one run found; renderers and the store read it, nothing recomputes it."""

    merchant_id: str
    settlement_date: dt.date
    covered_dates: tuple[dt.date, ...]
    rows: pd.DataFrame  # one per settlement row, with category, reason, flags, record
    missing: pd.DataFrame  # MISSING_IN_SETTLEMENT items this date opens
    ledger: Ledger  # what this file settles
    closures: pd.DataFrame  # earlier open items this file closes
    open_items: pd.DataFrame  # earlier open items still open after this run, with age
    counts: dict[str, int]
    amounts: dict[str, int]
    totals: dict[str, int]
    record_totals: dict[str, int | None]  # what the records say, for the covered dates
    refund_deltas: pd.DataFrame  # per payment with refunds: records vs settled
    all_open_items: pd.DataFrame  # every open MISSING_IN_SETTLEMENT item, with age
    #: A run in parts: its flagged rows kept elsewhere (on disk), `rows` then holding
    #: none of them.
    flagged: FlaggedSource | None = None

    @property
    def exceptions(self) -> int:
        return sum(n for c, n in self.counts.items() if c != cat.MATCHED)
