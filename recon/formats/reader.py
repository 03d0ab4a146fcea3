"""Read a settlement file (CSV or XLSX) into normalised rows, per a declared format.

A row that cannot be read is kept with its line number and an ``invalid_reason``; a file
that cannot be trusted as a whole raises `FileRejected` naming the file and the fault.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from recon.core.errors import FileRejected
from recon.core.money import format_amount
from recon.core.schemas import (
    SETTLEMENT_LABELS,
    SETTLEMENT_ROWS,
    conform,
    joined_values,
    text_array,
    value_offsets,
)
from recon.formats.arrow_csv import fast_csv_grid, fast_csv_parse
from recon.formats.declaration import (
    CONTROL_CHARACTERS,
    DATETIME,
    DEFAULT_LIMITS,
    MONEY,
    Column,
    FileFormat,
    ReadLimits,
)
from recon.formats.delimited import decode_csv, read_csv_table, sniff_delimiter
from recon.formats.grid import (
    BATCH_BYTES,
    NO_ROWS,
    WHOLE,
    Grid,
    Piece,
    Trailer,
    count_bytes,
    grid_from_table,
    header_line_of,
    is_blank,
    lone_cr,
)
from recon.formats.values import NOT_PARSED, not_parsed_text, parsed_columns
from recon.formats.xlsx import read_xlsx_table
from recon.system.memory import give_back_free_heap

log = logging.getLogger(__name__)


# Python's csv refuses a field over 131,072 characters with an error of its own; a field
# of any length is read, and a text field longer than its column makes its row INVALID_ROW.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class SettlementFile:
    """A settlement file that passed the file-level checks."""

    name: str
    rows: pd.DataFrame  # schema SETTLEMENT_ROWS
    trailer: Trailer | None
    sheet_format: str  # "csv (,)", "csv (;)" or "xlsx"

    @property
    def data_rows(self) -> int:
        return len(self.rows)


def _add_reason(reasons: pd.Series, mask: pd.Series,
                text: str | Callable[[pd.Index], pd.Series]) -> pd.Series:
    """Append `text` to the reasons of the masked rows; a callable builds the texts for
    those rows only (a million-row file has a handful of bad rows)."""
    if not mask.any():
        return reasons
    where = mask.index[mask.to_numpy(dtype=bool)]
    current = reasons.loc[where]
    addition = text if isinstance(text, str) else text(where)
    joined = current.where(current == "", current + "; ") + addition
    reasons = reasons.copy()
    reasons.loc[where] = joined
    return reasons


def _printable(values: pd.Series) -> pd.Series:
    """The texts with each control character written as \\xNN, so that a reason or a
    stored cell never carries one."""
    return values.str.replace(CONTROL_CHARACTERS, lambda m: f"\\x{ord(m.group()):02x}",
                              regex=True)


def _quoted(values: pd.Series) -> pd.Series:
    return "'" + _printable(values.str.slice(0, 40)) + "'"


def _checked_text(col: Column, values: pd.Series, reasons: pd.Series
                  ) -> tuple[pd.Series, pd.Series]:
    """A key column's values and the rows' reasons, with the rows whose key holds a control
    character or is longer than `key_length` found: their value is kept printable and
    within the width, so that every database takes the row alike."""
    width = col.key_length
    if width is None or values.empty:
        return values, reasons
    # Looked at as bytes first (a day's keys hold neither): a control character is a byte
    # below 0x20 or 0x7f in UTF-8, and a text of more characters has more bytes.
    texts = text_array(values)
    data = np.frombuffer(joined_values(texts), dtype=np.uint8)
    has_control = bool(((data < 0x20) | (data == 0x7F)).any())
    has_long = bool((np.diff(value_offsets(texts)) > width).any())
    if not has_control and not has_long:
        return values, reasons
    none = pd.Series(False, index=values.index)
    control = (values.str.contains(CONTROL_CHARACTERS, regex=True).astype(bool)
               if has_control else none)
    too_long = (values.str.len() > width).astype(bool) if has_long else none
    reasons = _add_reason(reasons, control, lambda where: (
        col.header + " " + _quoted(values.loc[where]) + " has a control character"))
    reasons = _add_reason(reasons, too_long, lambda where: (
        col.header + " " + _quoted(values.loc[where]) + "... is "
        + values.loc[where].str.len().astype(str) + f" characters long (at most {width})"))
    bad = control | too_long
    if bad.any():
        where = bad.index[bad.to_numpy(dtype=bool)]
        values = values.copy()
        values.loc[where] = _printable(values.loc[where]).str.slice(0, width)
    return values, reasons


def _described(header: str, values: pd.Series, problem: str) -> Callable[[pd.Index], pd.Series]:
    """'<header> '<value>' <problem>' for the rows asked for."""
    return lambda where: header + " " + _quoted(values.loc[where]) + " " + problem


def read_settlement_file(
    path: Path, fmt: FileFormat, settlement_date: dt.date, name: str | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> SettlementFile:
    """Read and check one settlement file; see the module docstring for the contract."""
    batches = SettlementBatches(path, fmt, settlement_date, name=name, batch_bytes=None,
                                limits=limits)
    rows = [frame for frame in batches]  # one: the whole file is one batch
    return SettlementFile(name=batches.name, rows=rows[0], trailer=batches.trailer,
                          sheet_format=batches.sheet_format)


class SettlementBatches:
    """A settlement file's rows, a batch of its lines at a time, as `read_settlement_file`
    reads them: each row in one batch, in file order, with its line number and findings.
    The file-level checks (SettlementDate, the TOTAL trailer, no data rows) need every
    row: `FileRejected` for them comes after the last batch, and whatever was done with
    the batches is to be undone. An XLSX file, and a CSV file of at most `batch_bytes`
    (None: any size), is one batch. `trailer` and `sheet_format` are known once the
    batches are read."""

    def __init__(self, path: Path, fmt: FileFormat, settlement_date: dt.date,
                 name: str | None = None, batch_bytes: int | None = BATCH_BYTES,
                 limits: ReadLimits = DEFAULT_LIMITS) -> None:
        self.path, self.fmt, self.settlement_date = path, fmt, settlement_date
        self.limits = limits
        self.name = name or path.name
        self.batch_bytes = batch_bytes
        self.trailer: Trailer | None = None
        self.sheet_format = ""

    def __iter__(self) -> Iterator[pd.DataFrame]:
        name, fmt = self.name, self.fmt
        findings = _FileFindings(name, self.settlement_date, fmt)
        for piece, holder in self._pieces():
            grid = _grid_of(name, self.path.suffix.lower(), holder, fmt, piece, self.limits)
            self.sheet_format = grid.layout
            if grid.trailer is not None:
                self.trailer = grid.trailer
            frame = _rows_of(grid, fmt)
            del grid
            findings.add(frame)
            yield frame
            del frame
            if not piece.whole:  # what the batch took goes back before the next one
                give_back_free_heap()
        findings.check(self.trailer)

    def _pieces(self) -> Iterator[tuple[Piece, list[bytes]]]:
        """Each piece with its bytes, in a list the reader empties (at 10M rows the file
        is 1.5 GB: it is let go once Arrow has read it, before the columns are made)."""
        try:
            size = self.path.stat().st_size
            if size > self.limits.max_file_bytes:
                raise FileRejected(self.name, f"{size:,} bytes, over max_file_bytes "
                                              f"({self.limits.max_file_bytes:,})")
            with self.path.open("rb") as handle:
                limit = self.batch_bytes
                held = [handle.read() if limit is None else handle.read(limit)]
                if limit is None or len(held[0]) < limit or held[0][:4] == b"PK\x03\x04" or (
                        self.path.suffix.lower() == ".xlsx"):
                    held[0] += handle.read()
                    yield WHOLE, held
                    return
                yield from _csv_pieces(held, handle, limit, self.fmt)
        except OSError as exc:
            raise FileRejected(self.name, f"cannot be read ({exc.strerror})") from exc


def _csv_pieces(held: list[bytes], handle: BinaryIO, limit: int, fmt: FileFormat
                ) -> Iterator[tuple[Piece, list[bytes]]]:
    """The pieces of a CSV file larger than `limit` whose first bytes are `held`: each
    ends at a line end outside quotes past `limit` bytes, and each after the first begins
    with the file's header line. A file whose head does not show a plain header line (a
    quoted field across lines up to it, a lone CR) is one piece."""
    delimiter = sniff_delimiter(held[0], fmt)
    header = None if delimiter is None else header_line_of(held[0], delimiter)
    if header is None or delimiter is None:
        held[0] += handle.read()
        yield WHOLE, held
        return
    carried, line_base, byte_base = held.pop(), 0, 0
    # A piece is sent once the next one with rows is found: the last may end in a trailer.
    pending: tuple[Piece, list[bytes]] | None = None
    while True:
        more = handle.read(limit)
        cut = _cut(carried) if more else len(carried)
        if cut is None:  # no line end outside quotes yet: a longer piece
            carried += more
            continue
        data, carried = carried[:cut], carried[cut:] + more
        first = pending is None and line_base == 0
        if first or not _blank_rows(data, delimiter):  # a piece that adds no row
            piece = Piece(first=first, last=False, line_base=0 if first else line_base - 1,
                          byte_base=0 if first else byte_base - len(header))
            if pending is not None:
                yield pending
            pending = (piece, [data if first else header + data])
        line_base += count_bytes(data, b"\n")
        if lone_cr(data):  # a line end for the general path
            line_base += data.count(b"\r") - data.count(b"\r\n")
        byte_base += len(data)
        del data
        if not carried:
            break
    assert pending is not None
    last, pending = (Piece(pending[0].first, True, pending[0].line_base, pending[0].byte_base),
                     pending[1]), None
    yield last


def _blank_rows(data: bytes, delimiter: str) -> bool:
    """Whether every row of `data` is blank (read as the general path reads it: a piece
    of rows begins with a row of data, so this looks no further)."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace", newline="")
    try:
        return all(is_blank(row) for row in csv.reader(text, delimiter=delimiter))
    except csv.Error:
        return False


def _cut(data: bytes) -> int | None:
    """Where a piece may end in `data`, which begins a line: after its last line end
    outside quotes (an even number of quotes before it; a piece so cut holds an even
    number, so the next begins outside quotes too). None when it has none."""
    end = data.rfind(b"\n")
    if end < 0 or b'"' not in data:
        return None if end < 0 else end + 1
    quotes = count_bytes(data, b'"', 0, end)  # one scan; going back a line takes off its quotes
    while quotes % 2:
        before = data.rfind(b"\n", 0, end)
        if before < 0:
            return None
        quotes -= data.count(b'"', before, end)
        end = before
    return end + 1


def _grid_of(name: str, suffix: str, holder: list[bytes], fmt: FileFormat,
             piece: Piece, limits: ReadLimits = DEFAULT_LIMITS) -> Grid:
    """The raw cells of a piece of the file (the whole file, for one piece); `holder`'s
    bytes are let go as soon as they are read."""
    data = holder.pop()
    if suffix == ".xlsx" or data[:4] == b"PK\x03\x04":
        if not data:
            raise FileRejected(name, "file is empty")
        return grid_from_table(name, read_xlsx_table(name, data, limits), fmt)
    sniffed = sniff_delimiter(data, fmt)
    read = fast_csv_parse(name, data, sniffed, fmt, piece, limits) if sniffed else None
    if read is not None:
        del data  # the rows are in Arrow's columns: at 10M rows the file is 1.5 GB
        return fast_csv_grid(name, read, fmt, piece)
    # The general path, on the decoded text (empty files end here).
    text, delimiter = decode_csv(name, data, fmt, piece.byte_base)
    del data
    return grid_from_table(name, read_csv_table(name, text, delimiter, piece.line_base, limits,
                                                fmt.trailer_marker), fmt, piece)


def _rows_of(grid: Grid, fmt: FileFormat) -> pd.DataFrame:
    """The rows of a grid, each field parsed, with the findings of the rows that cannot
    be read in `invalid_reason` (each row's in the order of the format's columns)."""
    raw = grid.raw
    frame = pd.DataFrame({"line_no": pd.Series(grid.lines, dtype="int64")})
    reasons = grid.shape_errors
    parsed = parsed_columns(raw, fmt)

    for col in fmt.columns:
        values = raw[col.field]
        if col.kind not in NOT_PARSED:
            values, reasons = _checked_text(col, values, reasons)
            frame[col.field] = values
            if col.mandatory_value:
                reasons = _add_reason(reasons, values == "", f"{col.header} is empty")
            continue
        *columns, bad = parsed[col.field]
        frame[col.field] = columns[0]
        if col.kind == DATETIME:
            frame["transaction_date"] = columns[1]
        if col.kind == MONEY:  # an empty amount is said to be empty
            empty = values == ""
            reasons = _add_reason(reasons, bad & empty, f"{col.header} is empty")
            bad = bad & ~empty
        reasons = _add_reason(reasons, bad,
                              _described(col.header, values, not_parsed_text(col.kind, fmt)))
    frame["invalid_reason"] = reasons
    for field in SETTLEMENT_LABELS:
        frame[field] = frame[field].astype("category")
    return conform(frame, SETTLEMENT_ROWS, "settlement rows")


#: Sums of amounts are exact 64-bit integers of minor units: a file whose amounts add up
#: (in absolute value) to this much or more cannot be added up exactly, and is refused.
SUMMABLE_MINOR = 1 << 62


class _FileFindings:
    """The file-level checks, over every batch of rows: a SettlementDate other than the
    run's, the TOTAL trailer's count and sums, a file without rows."""

    def __init__(self, name: str, settlement_date: dt.date, fmt: FileFormat) -> None:
        self.name, self.settlement_date, self.fmt = name, settlement_date, fmt
        self.rows = self.invalid = self.wrong_dates = 0
        self.first_wrong: tuple[int, object] | None = None
        self.sums = {"gross": 0, "net": 0}
        self.unreadable = {"gross": 0, "net": 0}
        self.magnitude = 0.0  # the amounts' absolute sum, roughly: can they be added?

    def add(self, rows: pd.DataFrame) -> None:
        stated = rows["settlement_date"]
        wrong = (stated.notna() & (stated != self.settlement_date)).astype(bool)
        if wrong.any():
            if self.first_wrong is None:
                first = rows.loc[wrong].iloc[0]
                self.first_wrong = (int(first["line_no"]), first["settlement_date"])
            self.wrong_dates += int(wrong.sum())
        self.rows += len(rows)
        self.invalid += int((rows["invalid_reason"] != "").sum())
        for column in self.sums:
            values = rows[column]
            self.unreadable[column] += int(values.isna().sum())
            self.sums[column] += int(values.sum(skipna=True))
        for column in ("gross", "mdr", "tax", "net"):
            self.magnitude = max(self.magnitude, float(
                rows[column].astype("float64").abs().sum(skipna=True)))

    def check(self, trailer: Trailer | None) -> None:
        name = self.name
        if self.magnitude >= SUMMABLE_MINOR:
            raise FileRejected(name, f"the amounts add up to more than "
                                     f"{format_amount(SUMMABLE_MINOR)} IDR, past what can be "
                                     "added exactly")
        if self.first_wrong is not None:
            line, stated = self.first_wrong
            more = self.wrong_dates - 1
            tail = f" (and {more} more line(s))" if more else ""
            header = self.fmt.column("settlement_date").header
            raise FileRejected(name, f"line {line}: {header} {stated} is not the "
                                     f"settlement date {self.settlement_date}{tail}")
        if not self.rows and trailer is None:
            raise FileRejected(name, NO_ROWS)
        if trailer is not None:
            self._check_trailer(trailer)
        log.info("%s: %d data rows (%d unreadable), trailer %s", name, self.rows, self.invalid,
                 "checked" if trailer else "absent")

    def _check_trailer(self, trailer: Trailer) -> None:
        where = f"{self.fmt.trailer_marker} trailer (line {trailer.line_no})"
        if trailer.rows != self.rows:
            raise FileRejected(self.name,
                               f"{where} says {trailer.rows} rows, the file has {self.rows}")
        for column, stated in (("gross", trailer.gross), ("net", trailer.net)):
            label = self.fmt.column(column).header
            if self.unreadable[column]:
                log.warning("%s: %s sum not verifiable, %d unreadable amounts", self.name,
                            label, self.unreadable[column])
                continue
            actual = self.sums[column]
            if actual != stated:
                raise FileRejected(
                    self.name,
                    f"{where} says {label} sums to {format_amount(stated)}, "
                    f"the rows sum to {format_amount(actual)}",
                )
