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

#: The flagged rows' columns the workbook and the store read, as their frame types.
FLAGGED_COLUMNS = {
    "line_no": "int64", "transaction_type": "str", "merchant_invoice": "str",
    "refund_invoice": "str", "ovo_reference_no": "str", "payment_source": "str",
    "transaction_time": "datetime64[ns, UTC]", "gross": "Int64", "mdr": "Int64",
    "tax": "Int64", "net": "Int64", "record_key": "str", "match_rule": "str",
    "record_amount": "Int64", "record_status": "str", "record_date": "object",
    "delta": "Int64", "reason": "str", "flags": "str", "category": "str",
}


class FlaggedRows(Protocol):
    """A result's flagged rows, wherever they are kept (in memory, or on disk for a run in
    parts): how many of each category, the first rows of one, a category's rows in file
    order, and every flagged row in the order the store keeps them, a batch at a time.
    The workbook and the store read the flagged rows through this and nothing else."""

    counts: dict[str, int]

    def head(self, category: str, rows: int) -> pd.DataFrame: ...

    def batches(self, category: str, rows: int, start: int = 0
                ) -> Iterator[pd.DataFrame]: ...

    def in_order(self, rows: int) -> Iterator[pd.DataFrame]: ...


class FlaggedFrame:
    """The flagged rows of a result's rows in memory: every row not MATCHED, in file order
    overall and within each category. Safe to read from several threads at once."""

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows
        self._shown = rows.loc[:, list(FLAGGED_COLUMNS)]  # what readers take, no more
        category = rows["category"]
        self.counts = {name: int((category == name).sum())
                       for name in cat.ROW_CATEGORIES if name != cat.MATCHED}
        self._positions: dict[str, np.ndarray] = {}

    def _of(self, category: str | None) -> np.ndarray:
        """The positions of a category's rows (None: of every flagged row), made once."""
        key = category or ""
        if key not in self._positions:
            column = self.rows["category"]
            mask = column != cat.MATCHED if category is None else column == category
            self._positions[key] = np.flatnonzero(mask.to_numpy(dtype=bool))
        return self._positions[key]

    def _taken(self, positions: np.ndarray, start: int, rows: int) -> Iterator[pd.DataFrame]:
        for at in range(start, len(positions), rows):
            yield self._shown.take(positions[at:at + rows])

    def head(self, category: str, rows: int) -> pd.DataFrame:
        return self._shown.take(self._of(category)[:rows])

    def batches(self, category: str, rows: int, start: int = 0) -> Iterator[pd.DataFrame]:
        return self._taken(self._of(category), start, rows)

    def in_order(self, rows: int) -> Iterator[pd.DataFrame]:
        return self._taken(self._of(None), 0, rows)


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
    #: The settlement rows the match held, with category, reason, flags and record: every
    #: row of a match; of a run in parts, its flagged rows or, on disk, none.
    rows: pd.DataFrame
    flagged: FlaggedRows  # the flagged rows, read by the workbook and the store
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

    @property
    def exceptions(self) -> int:
        return sum(n for c, n in self.counts.items() if c != cat.MATCHED)
