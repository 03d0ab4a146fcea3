"""Read a settlement file (CSV or XLSX) into normalised rows, per a declared format.

A row that cannot be read is kept with its line number and an ``invalid_reason``; a file
that cannot be trusted as a whole raises `FileRejected` naming the file and the fault.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import functools
import io
import itertools
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recon.core.calendar import WIB
from recon.core.errors import FileRejected
from recon.core.money import MINOR_PER_UNIT, format_amount
from recon.core.schemas import (
    SETTLEMENT_LABELS,
    SETTLEMENT_ROWS,
    arrow_text,
    conform,
    joined_values,
    one_chunk,
    text_array,
    value_offsets,
)
from recon.formats.declaration import (
    CONTROL_CHARACTERS,
    DATE,
    DATETIME,
    DEFAULT_LIMITS,
    MONEY,
    PAYMENT_SOURCE,
    TRANSACTION_TYPE,
    Column,
    FileFormat,
    ReadLimits,
    normalise_header,
    normalise_pay_option,
    shown_layout,
)
from recon.system.memory import give_back_free_heap

log = logging.getLogger(__name__)

#: An amount: at most two decimals that are not zeros (12.3400 is 12.34).
_MONEY_RE = r"^\s*[+-]?\d{1,15}(?:\.\d{0,2}0*)?\s*$"
_MONEY_EXTRA_ZEROS = r"^([^.]*\.\d{0,2})0*$"  # on a trimmed, valid amount
_DATETIME_RE = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?$"
_OFFSET_RE = r"(?:Z|[+-]\d{2}:?\d{2})$"
#: The shapes with an offset Arrow parses: 'YYYY-MM-DD HH:MM:SS' (or with a T) for the
#: years 1970-2199 with an offset of up to 14 hours (Z, +07:00 or +0700); per shape its
#: regular expression and its strptime format. The same shapes in WIB, without an offset,
#: are read from their bytes (`_wib_stamps`).
_DAY_RE = r"^(?:19[7-9]\d|2[01]\d\d)-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_CLOCK_RE = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
_ZONE_RE = r"(?:Z|[+-](?:0\d|1[0-4]):?[0-5]\d)"
_ZONED_SHAPES = tuple((f"{_DAY_RE}{sep}{_CLOCK_RE}{_ZONE_RE}$", f"%Y-%m-%d{sep}%H:%M:%S%z")
                      for sep in (" ", "T"))
#: Times a nanosecond timestamp holds whatever the offset (pandas' own bounds are 1677-2262).
_TIME_RANGE = (pd.Timestamp("1678-01-01"), pd.Timestamp("2261-12-31"))
PROGRESS_EVERY = 500_000

# Python's csv refuses a field over 131,072 characters with an error of its own; a field
# of any length is read, and a text field longer than its column makes its row INVALID_ROW.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class Trailer:
    line_no: int
    rows: int
    gross: int
    net: int


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


@dataclass(frozen=True)
class _Grid:
    """Raw text per format field, physical line numbers, shape errors, the trailer."""

    raw: pd.DataFrame
    lines: list[int] | np.ndarray  # the Arrow path numbers its rows with an int64 range
    shape_errors: pd.Series
    trailer: Trailer | None
    layout: str


@dataclass(frozen=True)
class _Table:
    header: list[str]
    header_line: int
    lines: list[int]
    cells: list[list[str]]
    layout: str


# --------------------------------------------------------------------------- raw tables


def _cell_text(value: object) -> str:
    """An XLSX cell as the text a CSV would carry (exact for numbers, ISO for dates)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    return str(value)


#: Why a file with a header and nothing else is refused.
NO_ROWS = "no data rows and no TOTAL trailer (truncated file?)"


def _is_blank(row: list[str]) -> bool:
    """A row of empty (or blank) cells, skipped like an empty line."""
    return not any(cell.strip() for cell in row)


def _is_trailer(row: list[str], fmt: FileFormat) -> bool:
    return bool(row) and row[0].strip().upper() == fmt.trailer_marker.upper()


def _cells(line: str, delimiter: str) -> list[str]:
    """One line's cells, read as the general path reads them ([] for an empty line)."""
    return next(csv.reader([line], delimiter=delimiter), [])


def _split_rows(name: str, numbered: Iterator[tuple[int, list[str]]], layout: str) -> _Table:
    header: list[str] | None = None
    header_line = 0
    lines: list[int] = []
    cells: list[list[str]] = []
    for line_no, row in numbered:
        if _is_blank(row):
            continue
        if header is None:
            header, header_line = row, line_no
            continue
        lines.append(line_no)
        cells.append(row)
        if len(cells) % PROGRESS_EVERY == 0:
            log.info("%s: %d rows read so far", name, len(cells))
    if header is None:
        raise FileRejected(name, "file is empty (no header row)")
    return _Table(header, header_line, lines, cells, layout)


def _detect_delimiter(first_line: str, allowed: tuple[str, ...]) -> str:
    counts = {sep: first_line.count(sep) for sep in allowed}
    return max(allowed, key=lambda sep: counts[sep])


def _decode_csv(name: str, data: bytes, fmt: FileFormat, byte_base: int = 0
                ) -> tuple[str, str]:
    """The text of a CSV file and its delimiter; FileRejected when empty or not UTF-8 (at
    an offset in the file `byte_base` past the one in `data`)."""
    if not data or data.isspace():  # without a stripped copy of the whole file
        raise FileRejected(name, "file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The decoder's offsets are past the BOM it takes off.
        at = exc.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        raise FileRejected(
            name, f"not UTF-8 text (byte 0x{data[at]:02x} at offset {at + byte_base})"
        ) from exc
    line = _first_line(data)
    if line is None:  # nothing but blank lines at the start: split the whole text
        line = next((line for line in text.splitlines() if line.strip()), "")
    return text, _detect_delimiter(line, fmt.delimiters)


def _first_line(data: bytes, look: int = 1 << 16, start: int = 0) -> str | None:
    """The first line that is not blank within the `look` bytes of a file from `start`;
    None when there is none there (a line `look` cuts does not count). Splitting a whole
    large file into lines only for this took most of a second. Bytes that are not UTF-8
    are left to the readers to report."""
    lines = data[start:start + look].decode("utf-8-sig", errors="ignore").splitlines()
    if len(data) > start + look:
        lines = lines[:-1]  # the last line of the head may go on past it
    return next((line for line in lines if line.strip()), None)


def _sniff_delimiter(data: bytes, fmt: FileFormat) -> str | None:
    """The delimiter as `_decode_csv` finds it, from the file's first bytes alone; None
    when they hold no line (the general path then decodes the whole file)."""
    line = _first_line(data)
    return None if line is None else _detect_delimiter(line, fmt.delimiters)


def _read_csv_table(name: str, text: str, delimiter: str, line_base: int = 0,
                    limits: ReadLimits = DEFAULT_LIMITS, marker: str = "TOTAL") -> _Table:
    """Every row with its physical line number (blank lines and quoted line breaks kept
    in the count), `line_base` past the line's in `text`. A row across lines is checked
    for a stray quote (`_check_spanning_row`), the last one also for a quote never closed."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)

    def numbered() -> Iterator[tuple[int, list[str]]]:
        previous_end = last_start = 0
        try:
            for row in reader:
                start = previous_end + 1
                previous_end = reader.line_num
                if previous_end > start:
                    _check_spanning_row(name, start + line_base, previous_end - start + 1,
                                        row, limits, marker)
                if row:
                    last_start = start
                yield start + line_base, row
        except csv.Error as exc:
            raise FileRejected(name, f"line {reader.line_num + line_base}: unreadable CSV "
                                     f"({exc})") from exc
        if last_start and '"' in text and _open_at_end(text, last_start, delimiter):
            raise FileRejected(name, f"line {last_start + line_base}: a quoted field opens "
                                     "here and is never closed (a stray quote?)")

    return _split_rows(name, numbered(), f"csv ({delimiter})")


def _check_spanning_row(name: str, line_no: int, span: int, cells: list[str],
                        limits: ReadLimits, marker: str) -> None:
    """A row whose quoted fields take `span` physical lines from `line_no`: refused when
    it spans more than `limits.max_quoted_lines` or swallows a line that looks like the
    trailer, the marks of a stray quote that hides the rows after it."""
    if span > limits.max_quoted_lines:
        raise FileRejected(name, f"line {line_no}: a quoted field opens here and runs over "
                                 f"{span} lines (max_quoted_lines {limits.max_quoted_lines}; "
                                 "a stray quote?)")
    if any(_swallows_trailer(cell, marker) for cell in cells if "\n" in cell or "\r" in cell):
        raise FileRejected(name, f"line {line_no}: a quoted field opens here and takes in a "
                                 f"{marker} line (a stray quote?)")


def _swallows_trailer(cell: str, marker: str) -> bool:
    lines = cell.replace("\r\n", "\n").replace("\r", "\n").split("\n")[1:]
    return any(line.lstrip().lstrip('"').upper().startswith(marker.upper()) for line in lines)


def _open_at_end(text: str, first_line: int, delimiter: str) -> bool:
    """Whether the row from line `first_line` of `text` to its end ends inside a quoted
    field (Python's csv, not strict, takes such a field to the end of the file)."""
    tail = "".join(itertools.islice(io.StringIO(text, newline=""), first_line - 1, None))
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _check_xlsx_size(name: str, data: bytes, limits: ReadLimits) -> None:
    """Refuse an XLSX file whose parts would expand past the limits, before any is read
    (Python's zipfile stops each part at its declared size, so the declared sizes hold)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FileRejected(name, f"corrupt XLSX ({type(exc).__name__}: {exc})") from exc
    total = sum(part.file_size for part in parts)
    if total > limits.max_xlsx_uncompressed_bytes:
        raise FileRejected(name, f"XLSX expands to {total:,} bytes, over "
                                 f"max_xlsx_uncompressed_bytes "
                                 f"({limits.max_xlsx_uncompressed_bytes:,})")
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > 1 << 20 and ratio > limits.max_xlsx_ratio:
            raise FileRejected(name, f"XLSX part {part.filename!r} expands {ratio:,.0f} times "
                                     f"(max_xlsx_ratio {limits.max_xlsx_ratio}): not a sheet")


def _read_xlsx_table(name: str, data: bytes, limits: ReadLimits = DEFAULT_LIMITS) -> _Table:
    from openpyxl import load_workbook

    _check_xlsx_size(name, data, limits)
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as exc:
        raise FileRejected(name, f"corrupt XLSX ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # openpyxl raises assorted errors on damaged parts
        raise FileRejected(name, f"corrupt XLSX ({type(exc).__name__}: {exc})") from exc
    try:
        if not workbook.worksheets:
            raise FileRejected(name, "XLSX has no worksheet")
        sheet = workbook.worksheets[0]
        # The sheet's declared dimension is not trusted: A1:XFD1048576 would pad every
        # row to 16,384 cells and add rows up to the millionth. Rows are read as written.
        reset = getattr(sheet, "reset_dimensions", None)
        if reset is not None:
            reset()

        def numbered() -> Iterator[tuple[int, list[str]]]:
            try:
                for index, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                    yield index, [_cell_text(value) for value in values]
            except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
                raise FileRejected(name, f"corrupt XLSX ({exc})") from exc

        return _split_rows(name, numbered(), "xlsx")
    finally:
        workbook.close()


# --------------------------------------------------------------------------- field parsers


def _per_distinct(values: pd.Series, parse: Callable[[pd.Series], tuple[pd.Series, pd.Series]]
                  ) -> tuple[pd.Series, pd.Series]:
    """`parse(values)`, each distinct text parsed once: a file of millions of rows holds
    one settlement date, a few hundred thousand times and far fewer amounts."""
    codes, distinct = pd.factorize(values)
    if len(distinct) * 2 > len(values) or (codes < 0).any():
        return parse(values)
    parsed, bad = parse(pd.Series(distinct, dtype="str"))
    return (pd.Series(parsed.array.take(codes), index=values.index),
            pd.Series(bad.to_numpy(dtype=bool)[codes], index=values.index))


def parse_money(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Decimal text ('.' separator) -> Int64 minor units, and a mask of unparseable values.

    More than two decimal places is unparseable unless the extra digits are zeros.
    Vectorised with Arrow compute, no Python loop per value: the shape is checked by one
    regular expression (RE2), zeros past the cents are dropped (a decimal of more digits
    than it holds would wrap silently in Arrow's parser), and the text is cast to decimal.
    """
    text = pa.array(values.astype("str"))
    ok = pc.fill_null(pc.match_substring_regex(text, _MONEY_RE), False)
    valid = pc.utf8_trim(pc.if_else(ok, text, "0"), "\t\n\f\r ")
    if pc.any(pc.match_substring_regex(valid, r"\.\d\d0")).as_py():  # rare: skip the rewrite
        valid = pc.replace_substring_regex(valid, _MONEY_EXTRA_ZEROS, r"\1")
    cents = pc.multiply(pc.cast(valid, pa.decimal128(18, 2)),
                        pa.scalar(MINOR_PER_UNIT, pa.decimal128(3, 0)))
    good = ok.to_numpy(zero_copy_only=False).astype(bool)
    numbers = pc.cast(cents, pa.int64()).to_numpy(zero_copy_only=False).astype("int64")
    numbers[~good] = 0
    parsed = pd.Series(pd.arrays.IntegerArray(numbers, ~good), index=values.index)
    return parsed, pd.Series(~good, index=values.index)


def parse_datetime(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO-like times -> UTC timestamps; a time without an offset is WIB.

    The shapes the files carry are read without pandas: in WIB (a fixed +07:00, Jakarta's
    offset since 1964) from their bytes (`_wib_stamps`), with an offset by Arrow
    (`_ZONED_SHAPES`), each shape on the texts no earlier one took; any other text as
    `_parse_times` does, each distinct text once."""
    text = pa.array(values.astype("str"))
    utc = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    fast, moments = _wib_stamps(text)
    utc[fast] = moments
    for shape, layout in _ZONED_SHAPES:
        if fast.all():
            break
        left = text if not fast.any() else text.filter(pa.array(~fast))
        shaped = pc.fill_null(pc.match_substring_regex(left, shape), False)
        where = np.zeros(len(values), dtype=bool)
        where[~fast] = np.asarray(shaped.to_numpy(zero_copy_only=False), dtype=bool)
        if not where.any():
            continue
        times = left.filter(shaped)
        parsed = pc.strptime(times, format=layout, unit="s", error_is_null=True)
        # strptime rolls a day past the month's end into the next month (30 February
        # is 2 March): such a text keeps its day, which its date, parsed alone, does not.
        date = pc.strptime(pc.utf8_slice_codeunits(times, 0, 10), format="%Y-%m-%d",
                           unit="s", error_is_null=True)
        good = pc.fill_null(pc.and_(pc.is_valid(parsed), pc.equal(pc.day(date), pc.cast(
            pc.utf8_slice_codeunits(times, 8, 10), pa.int64()))), False)
        moments = pc.filter(parsed, good).cast(pa.timestamp("ns")).to_numpy(zero_copy_only=False)
        where[where] = np.asarray(good.to_numpy(zero_copy_only=False), dtype=bool)
        utc[where] = moments
        fast |= where
    if not fast.all():
        parsed_slowly, _ = _per_distinct(values[~fast], _parse_times)
        utc[~fast] = parsed_slowly.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    result = pd.Series(utc, index=values.index).dt.tz_localize("UTC")
    return result, result.isna()


#: The byte positions of the digits of 'YYYY-MM-DD HH:MM:SS', and of its separators with
#: the bytes each may be ('-', '-', a space or a T, ':', ':').
_STAMP_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_STAMP_SEPARATORS = ((4, b"-"), (7, b"-"), (10, b" T"), (13, b":"), (16, b":"))
#: The first day of each month from 1970 to 2199, and of January 2200, as days since
#: 1970-01-01 (a month's length is the difference to the next).
_STAMP_YEARS = (1970, 2199)
_MONTH_STARTS = np.arange((_STAMP_YEARS[1] - _STAMP_YEARS[0] + 1) * 12 + 1).astype(
    "datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _wib_stamps(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Which of `text` are 'YYYY-MM-DD HH:MM:SS' (or with a T) in WIB, a real day of the
    years 1970-2199 and a time of day, and those as UTC nanoseconds: read from their bytes
    by array operations, where a regular expression and strptime per shape took
    0.20-0.24 s for a million. Exactly what Arrow's strptime took of these two shapes
    before (the same regular expressions, less the offset, as `_ZONED_SHAPES`): the rest
    of `text` goes on to the shapes with an offset and to pandas."""
    text = one_chunk(text)
    stamped = np.zeros(len(text), dtype=bool)
    sized = np.asarray(pc.equal(pc.binary_length(text), 19).fill_null(False).to_numpy(
        zero_copy_only=False), dtype=bool)
    at = np.flatnonzero(sized)
    if not len(at):
        return stamped, np.zeros(0, dtype="datetime64[ns]")
    # The texts of 19 bytes one after another, as rows of a byte matrix (no copy when
    # every text is of 19 bytes, as in a file of such times).
    if len(at) < len(text):
        text = text.filter(pa.array(sized))
    cells = np.frombuffer(joined_values(text), dtype=np.uint8).reshape(len(at), 19)
    good = np.ones(len(at), dtype=bool)
    for position, allowed in _STAMP_SEPARATORS:
        separator = cells[:, position]
        good &= functools.reduce(np.logical_or, (separator == byte for byte in allowed))
    # Each digit's position as a row of its own (a byte below '0' wraps past 9).
    digits = cells[:, _STAMP_DIGITS].T - np.uint8(ord("0"))
    del cells
    good &= (digits <= 9).all(axis=0)

    def number(*rows: int) -> np.ndarray:
        value = digits[rows[0]].astype(np.int32)
        for row in rows[1:]:
            value = value * 10 + digits[row]
        return value

    year, month, day = number(0, 1, 2, 3), number(4, 5), number(6, 7)
    hour, minute, second = number(8, 9), number(10, 11), number(12, 13)
    good &= ((year >= _STAMP_YEARS[0]) & (year <= _STAMP_YEARS[1]) & (month >= 1)
             & (month <= 12) & (hour <= 23) & (minute <= 59) & (second <= 59))
    months = np.where(good, (year - _STAMP_YEARS[0]) * 12 + month - 1, 0)
    first_day = _MONTH_STARTS[months]
    good &= (day >= 1) & (day <= _MONTH_STARTS[months + 1] - first_day)
    seconds = ((first_day + day - 1) * 86_400 + hour * 3_600 + minute * 60 + second
               - 7 * 3_600)[good]  # WIB is UTC+7
    stamped[at[good]] = True
    return stamped, (seconds * 1_000_000_000).astype("datetime64[ns]")


def _parse_times(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`parse_datetime` for any shape, through pandas."""
    text = values.astype(str).str.strip()
    shaped = text.str.match(_DATETIME_RE)
    has_offset = shaped & text.str.contains(_OFFSET_RE, regex=True)
    naive = shaped & ~has_offset
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if naive.any():
        local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        local = local.where(local.between(*_TIME_RANGE))  # a time the result can hold
        result.loc[naive] = local.dt.tz_localize(WIB).dt.tz_convert("UTC").astype(result.dtype)
    if has_offset.any():
        aware = pd.to_datetime(text[has_offset], format="ISO8601", errors="coerce", utc=True)
        aware = aware.where(aware.between(*(t.tz_localize("UTC") for t in _TIME_RANGE)))
        result.loc[has_offset] = aware.astype(result.dtype)
    return result, result.isna()


def parse_pay_option(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Payment sources -> pay options ('' where unknown), and a mask of the unknown ones."""
    option = pd.Series([normalise_pay_option(text) for text in values.tolist()],
                       index=values.index, dtype=object)
    bad = option.isna()
    return option.where(~bad, "").astype("str"), bad


def parse_date(values: pd.Series, layout: str = "%Y-%m-%d") -> tuple[pd.Series, pd.Series]:
    text = values.astype(str).str.strip()
    if layout == "%Y-%m-%d":
        # A spreadsheet date cell arrives as a midnight datetime; accept it as the date.
        shaped = text.str.match(r"^\d{4}-\d{2}-\d{2}(?:[ T]00:00(?::00)?)?$")
        text = text.str.slice(0, 10).where(shaped)
    parsed = pd.to_datetime(text, format=layout, errors="coerce")
    return date_objects(parsed, values.index), parsed.isna()


def parse_local_times(values: pd.Series, layout: str) -> tuple[pd.Series, pd.Series]:
    """Times written in `layout` (strptime), in WIB -> UTC timestamps."""
    local = pd.to_datetime(values.astype(str).str.strip(), format=layout, errors="coerce")
    local = local.where(local.between(*_TIME_RANGE))
    result = local.dt.tz_localize(WIB).dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return result, result.isna()


def with_decimal_point(values: pd.Series, separator: str) -> pd.Series:
    """Amounts written with `separator` before their decimals, as amounts with a point (a
    point among them, a thousands separator there, no longer reads as an amount)."""
    if separator == ".":
        return values
    return values.str.replace(".", "\x01", regex=False).str.replace(separator, ".",
                                                                    regex=False)


def wib_dates(times: pd.Series) -> pd.Series:
    """UTC timestamps -> their WIB business dates (datetime.date objects, None for NaT)."""
    return date_objects(times.dt.tz_convert(WIB).dt.tz_localize(None), times.index)


def date_objects(moments: pd.Series, index: pd.Index) -> pd.Series:
    """Naive timestamps -> their calendar dates as datetime.date objects (None for NaT).

    Each distinct day is converted once: a file spans a few days, not a million."""
    days = moments.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    codes, distinct = pd.factorize(days)
    objects = np.array([None, *(pd.Timestamp(d).date() for d in distinct)], dtype=object)
    return pd.Series(objects[codes + 1], index=index, dtype="object")


# --------------------------------------------------------------------------- the reader


def _map_header(name: str, table: _Table, fmt: FileFormat) -> dict[str, int]:
    positions: dict[str, int] = {}
    by_key = {normalise_header(col.header): col for col in fmt.columns}
    for index, raw in enumerate(table.header):
        key = normalise_header(raw)
        col = by_key.get(key)
        if col is None:
            continue
        if col.field in positions:
            raise FileRejected(name, f"column {col.header} appears twice in the header")
        positions[col.field] = index
    missing = [col.header for col in fmt.columns if col.required and col.field not in positions]
    if missing:
        raise FileRejected(
            name, f"required column(s) missing: {', '.join(missing)} (line {table.header_line})"
        )
    return positions


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


def _parse_trailer(name: str, line_no: int, cells: list[str], fmt: FileFormat) -> Trailer:
    values = [cell.strip() for cell in cells[1:4]]
    if len(values) < 3 or not values[0].isdigit():
        raise FileRejected(
            name, f"line {line_no}: {fmt.trailer_marker} trailer must give row count, gross "
                  "sum and net sum"
        )
    amounts, bad = parse_money(with_decimal_point(pd.Series(values[1:3], dtype="str"),
                                                  fmt.decimal_separator))
    if bad.any():
        raise FileRejected(name, f"line {line_no}: {fmt.trailer_marker} trailer amounts are "
                                 "not decimals")
    return Trailer(line_no, int(values[0]), int(amounts.iloc[0]), int(amounts.iloc[1]))


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


#: What `SettlementBatches` reads of a CSV file at a time by default: its lines up to a
#: line end past this many bytes. At 1M rows (150 MB) the whole file is one batch.
BATCH_BYTES = 256 << 20


@dataclass(frozen=True)
class _Piece:
    """Some of a CSV file's lines, read as a file of their own: the header line, then the
    lines. Its line numbers and byte offsets are the file's less `line_base` and
    `byte_base`."""

    first: bool
    last: bool
    line_base: int = 0
    byte_base: int = 0

    @property
    def whole(self) -> bool:
        return self.first and self.last


#: The whole file as one piece.
_WHOLE = _Piece(first=True, last=True)


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

    def _pieces(self) -> Iterator[tuple[_Piece, list[bytes]]]:
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
                    yield _WHOLE, held
                    return
                yield from _csv_pieces(held, handle, limit, self.fmt)
        except OSError as exc:
            raise FileRejected(self.name, f"cannot be read ({exc.strerror})") from exc


def _csv_pieces(held: list[bytes], handle: BinaryIO, limit: int, fmt: FileFormat
                ) -> Iterator[tuple[_Piece, list[bytes]]]:
    """The pieces of a CSV file larger than `limit` whose first bytes are `held`: each
    ends at a line end outside quotes past `limit` bytes, and each after the first begins
    with the file's header line. A file whose head does not show a plain header line (a
    quoted field across lines up to it, a lone CR) is one piece."""
    delimiter = _sniff_delimiter(held[0], fmt)
    header = None if delimiter is None else _header_line(held[0], delimiter)
    if header is None or delimiter is None:
        held[0] += handle.read()
        yield _WHOLE, held
        return
    carried, line_base, byte_base = held.pop(), 0, 0
    # A piece is sent once the next one with rows is found: the last may end in a trailer.
    pending: tuple[_Piece, list[bytes]] | None = None
    while True:
        more = handle.read(limit)
        cut = _cut(carried) if more else len(carried)
        if cut is None:  # no line end outside quotes yet: a longer piece
            carried += more
            continue
        data, carried = carried[:cut], carried[cut:] + more
        first = pending is None and line_base == 0
        if first or not _blank_rows(data, delimiter):  # a piece that adds no row
            piece = _Piece(first=first, last=False, line_base=0 if first else line_base - 1,
                           byte_base=0 if first else byte_base - len(header))
            if pending is not None:
                yield pending
            pending = (piece, [data if first else header + data])
        line_base += _count(data, b"\n")
        if _lone_cr(data):  # a line end for the general path
            line_base += data.count(b"\r") - data.count(b"\r\n")
        byte_base += len(data)
        del data
        if not carried:
            break
    assert pending is not None
    last, pending = (_Piece(pending[0].first, True, pending[0].line_base, pending[0].byte_base),
                     pending[1]), None
    yield last


#: The bytes `_count` compares at a time (a few MiB of booleans, not the file's size).
_COUNT_STEP = 1 << 21


def _count(data: bytes, byte: bytes, start: int = 0, end: int | None = None) -> int:
    """`data.count(byte, start, end)` for one byte, compared a step at a time in NumPy:
    three times as fast as `bytes.count` over a file of a million lines (0.04 s, not
    0.13 s, for its line ends)."""
    view = np.frombuffer(data, dtype=np.uint8)[start:end]
    value = byte[0]
    return sum(int(np.count_nonzero(view[at:at + _COUNT_STEP] == value))
               for at in range(0, len(view), _COUNT_STEP))


def _lone_cr(data: bytes) -> bool:
    """Whether `data` has a CR that is not the first byte of a CRLF."""
    if b"\r" not in data:
        return False
    view = np.frombuffer(data, dtype=np.uint8)
    for at in range(0, len(view), _COUNT_STEP):
        after = np.flatnonzero(view[at:at + _COUNT_STEP] == 13) + at + 1
        if len(after) and (after[-1] == len(view) or (view[after] != 10).any()):
            return True
    return False


def _find_header(data: bytes, start: int, limit: int, delimiter: str
                 ) -> tuple[int, int, list[str], int] | None:
    """The header: the first line from `start` that is not blank, as both readers find it
    (lines of blank cells are skipped, as the general path skips them). Its first byte,
    its line end (-1 where it ends at `limit`), its cells and how many lines were skipped
    before it. None where a blank line has a quote (it may span lines), a line has a CR
    not before its LF (a line end for the general path alone), after a thousand blank
    lines, or where the bytes are not UTF-8 (the general path says where)."""
    skipped = 0
    while True:
        end = data.find(b"\n", start, limit)
        try:
            text = data[start:end if end >= 0 else limit].decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError:
            return None
        if "\r" in text:
            return None
        cells = _cells(text, delimiter)
        if not _is_blank(cells):
            return start, end, cells, skipped
        if end < 0 or '"' in text or skipped == 1000:
            return None  # nothing but blank lines, or a quote that may span lines
        start, skipped = end + 1, skipped + 1


def _header_line(head: bytes, delimiter: str) -> bytes | None:
    """The header line of a CSV file as its first bytes hold it, with its line end. None
    where the head shows no such line plainly (`_find_header` finds none, it has no line
    end there, a quoted field goes on past it)."""
    start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    found = _find_header(head, start, len(head), delimiter)
    if found is None or found[1] < 0:
        return None
    line = head[found[0]:found[1] + 1]
    return None if line.count(b'"') % 2 else line


def _blank_rows(data: bytes, delimiter: str) -> bool:
    """Whether every row of `data` is blank (read as the general path reads it: a piece
    of rows begins with a row of data, so this looks no further)."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace", newline="")
    try:
        return all(_is_blank(row) for row in csv.reader(text, delimiter=delimiter))
    except csv.Error:
        return False


def _cut(data: bytes) -> int | None:
    """Where a piece may end in `data`, which begins a line: after its last line end
    outside quotes (an even number of quotes before it; a piece so cut holds an even
    number, so the next begins outside quotes too). None when it has none."""
    end = data.rfind(b"\n")
    if end < 0 or b'"' not in data:
        return None if end < 0 else end + 1
    quotes = _count(data, b'"', 0, end)  # one scan; going back a line takes off its quotes
    while quotes % 2:
        before = data.rfind(b"\n", 0, end)
        if before < 0:
            return None
        quotes -= data.count(b'"', before, end)
        end = before
    return end + 1


def _grid_of(name: str, suffix: str, holder: list[bytes], fmt: FileFormat,
             piece: _Piece, limits: ReadLimits = DEFAULT_LIMITS) -> _Grid:
    """The raw cells of a piece of the file (the whole file, for one piece); `holder`'s
    bytes are let go as soon as they are read."""
    data = holder.pop()
    if suffix == ".xlsx" or data[:4] == b"PK\x03\x04":
        if not data:
            raise FileRejected(name, "file is empty")
        return _grid_from_table(name, _read_xlsx_table(name, data, limits), fmt)
    sniffed = _sniff_delimiter(data, fmt)
    read = _fast_csv_parse(name, data, sniffed, fmt, piece, limits) if sniffed else None
    if read is not None:
        del data  # the rows are in Arrow's columns: at 10M rows the file is 1.5 GB
        return _fast_csv_grid(name, read, fmt, piece)
    # The general path, on the decoded text (empty files end here).
    text, delimiter = _decode_csv(name, data, fmt, piece.byte_base)
    del data
    return _grid_from_table(name, _read_csv_table(name, text, delimiter, piece.line_base, limits,
                                                  fmt.trailer_marker), fmt, piece)


#: From this many rows a batch's columns are parsed two at a time, on two threads (Arrow's
#: and NumPy's kernels let go of the interpreter): at 1M rows 0.25-0.30 s where one after
#: another took 0.44-0.52 s on two cores. Fewer rows are parsed in turn.
PARALLEL_ROWS = 100_000

#: The column kinds whose texts are parsed, not taken as they are, and what a row's
#: reason says of a text that cannot be parsed.
_NOT_PARSED = {MONEY: "is not a decimal amount", DATETIME: "is not a date and time",
               DATE: "is not a YYYY-MM-DD date", TRANSACTION_TYPE: "is not PAYMENT or REFUND",
               PAYMENT_SOURCE: "is not OVO Cash or OVO Points"}


def _not_parsed(kind: str, fmt: FileFormat) -> str:
    """What a row's reason says of a text of `kind` that the format cannot parse."""
    if kind == DATE:
        return f"is not a {shown_layout(fmt.date_format)} date"
    if kind == DATETIME and fmt.time_format:
        return f"is not a {shown_layout(fmt.time_format)} date and time"
    return _NOT_PARSED[kind]


def _parsed(values: pd.Series, kind: str, fmt: FileFormat) -> tuple[pd.Series, ...]:
    """One column's texts parsed as its kind says: the values and the mask of the texts
    that are not such values (a time's WIB dates between them)."""
    if kind == MONEY:
        return _per_distinct(with_decimal_point(values, fmt.decimal_separator), parse_money)
    if kind == DATETIME:
        moments, bad = (_per_distinct(values, functools.partial(
            parse_local_times, layout=fmt.time_format)) if fmt.time_format
            else parse_datetime(values))
        return moments, wib_dates(moments), bad
    if kind == DATE:
        return _per_distinct(values, functools.partial(parse_date, layout=fmt.date_format))
    if kind == TRANSACTION_TYPE:
        upper = values.str.upper()
        ok = upper.isin([fmt.payment_type, fmt.refund_type])
        return upper.where(ok, ""), ~ok
    return _per_distinct(values, parse_pay_option)


def _parsed_columns(raw: pd.DataFrame, fmt: FileFormat) -> dict[str, tuple[pd.Series, ...]]:
    """`_parsed` of each of the format's parsed columns, by field: two at a time, the
    slowest (the times) first, from PARALLEL_ROWS rows."""
    columns = sorted((col for col in fmt.columns if col.kind in _NOT_PARSED),
                     key=lambda col: col.kind != DATETIME)
    if len(raw) < PARALLEL_ROWS:
        return {col.field: _parsed(raw[col.field], col.kind, fmt) for col in columns}
    with ThreadPoolExecutor(2, thread_name_prefix="recon-read") as pool:
        futures = {col.field: pool.submit(_parsed, raw[col.field], col.kind, fmt)
                   for col in columns}
        return {field: future.result() for field, future in futures.items()}


def _rows_of(grid: _Grid, fmt: FileFormat) -> pd.DataFrame:
    """The rows of a grid, each field parsed, with the findings of the rows that cannot
    be read in `invalid_reason` (each row's in the order of the format's columns)."""
    raw = grid.raw
    frame = pd.DataFrame({"line_no": pd.Series(grid.lines, dtype="int64")})
    reasons = grid.shape_errors
    parsed = _parsed_columns(raw, fmt)

    for col in fmt.columns:
        values = raw[col.field]
        if col.kind not in _NOT_PARSED:
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
                              _described(col.header, values, _not_parsed(col.kind, fmt)))
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


def _grid_from_table(name: str, table: _Table, fmt: FileFormat, piece: _Piece = _WHOLE
                     ) -> _Grid:
    """The general path: rows as lists of cells, any shape, any line layout. Only the
    file's last piece may end in a trailer; a piece of a file may hold no rows."""
    positions = _map_header(name, table, fmt)
    lines, cells = table.lines, table.cells
    trailer: Trailer | None = None
    if piece.last and cells and _is_trailer(cells[-1], fmt):
        trailer = _parse_trailer(name, lines[-1], cells[-1], fmt)
        lines, cells = lines[:-1], cells[:-1]
    if not cells and trailer is None and piece.whole:
        raise FileRejected(name, NO_ROWS)
    width = len(table.header)
    columns: dict[str, list[str]] = {col.field: [] for col in fmt.columns}
    shape_errors: list[str] = []
    for read in cells:
        row = _fitted(read, width)
        shape_errors.append(_too_wide(len(row), width))
        for col in fmt.columns:
            index = positions.get(col.field)
            columns[col.field].append(row[index].strip() if index is not None and index < len(row)
                                      else "")
    return _Grid(pd.DataFrame(columns, dtype="str"), lines, pd.Series(shape_errors, dtype="str"),
                 trailer, table.layout)


def _fitted(row: list[str], width: int) -> list[str]:
    """A row without the empty cells past the header's `width`: a delimiter at the end of
    a line adds a cell, not a value."""
    while len(row) > width and not row[-1].strip():
        row = row[:-1]
    return row


def _too_wide(cells: int, width: int) -> str:
    """The finding on a row of `cells` cells past `_fitted` ('' when it fits)."""
    return f"line has {cells} fields, the header has {width}" if cells > width else ""


@dataclass
class _ArrowRead:
    """What `_fast_csv_parse` read, for `_fast_csv_grid`: no longer the file's bytes."""

    table: pa.Table | None  # the rows' cells as Arrow read them (let go by the grid)
    width: int  # the header's
    lines: np.ndarray
    odd: list[tuple[int, str]]  # rows of another width: (row number, text)
    trailer: Trailer | None
    positions: dict[str, int]
    delimiter: str


def _fast_csv_parse(name: str, data: bytes, delimiter: str, fmt: FileFormat,
                    piece: _Piece = _WHOLE, limits: ReadLimits = DEFAULT_LIMITS
                    ) -> _ArrowRead | None:
    """Arrow's CSV reader for the common file: LF or CRLF line ends (the last line's may
    be missing), data rows as wide as the first (as wide as the header, or wider with empty
    cells past it: a delimiter at the end of each row), and a few rows of other widths, set
    aside (`_arrow_csv`). Empty lines and rows of empty cells are skipped, before the header
    too, and rows keep their physical line numbers. Quoted fields may span lines in a file
    without empty lines or rows of other widths (`_spanned_lines`).
    Anything else returns None and takes the general path, so line numbers and row-level
    findings are the same.

    `data` is the file's bytes. Arrow reads them in place and checks that they are UTF-8;
    the file is not decoded or copied as a whole (at 10M rows it is 1.5 GB), and once this
    returns, the caller lets the bytes go before `_fast_csv_grid` makes the columns."""
    # A CR only as part of CRLF, which ends a line for both readers (a lone CR would
    # end one for Arrow alone).
    if _lone_cr(data):
        return None
    start, limit = _text_bounds(data)
    found = _find_header(data, start, limit, delimiter)
    if found is None:
        return None
    start, header_end, header, skipped = found
    quoted = data.find(b'"', start, limit) >= 0  # only a quoted field can span lines
    trailer: Trailer | None = None
    last_start = max(data.rfind(b"\n", start, limit) + 1, start)
    try:
        last_text = data[last_start:limit].decode("utf-8")
    except UnicodeDecodeError:
        return None  # the general path reports where
    table = _Table(header, skipped + 1, [], [], f"csv ({delimiter})")
    positions = _map_header(name, table, fmt)
    # The header alone: any further line is a trailer, a row, or a file Arrow refuses.
    if last_start == start:
        if piece.whole:
            raise FileRejected(name, NO_ROWS)
        return None  # a piece without rows: the general path reads none
    found_last = _last_line(data, start, last_start, _cells(last_text, delimiter), delimiter,
                            quoted)
    if found_last is None:
        return None
    last_start, last = found_last
    if quoted and _count(data, b'"', start, last_start) % 2 and _ends_a_trailer(
            data, start, last_start, fmt):
        return None  # a trailer with a quoted line break: the general path reads it
    # The trailer is read once Arrow has read the rows: a file with bytes that are not
    # UTF-8 goes to the general path, which says so before any other fault.
    end, body_lines, trailer_line = _body(data, start, last_start, limit, piece, skipped,
                                          _is_trailer(last, fmt))
    if quoted and _count(data, b'"', start, end) % 2:
        return None  # a quote the body may leave open (Arrow would close it at the end)
    width = len(header)
    odd: list[tuple[int, str]] = []  # rows of another width: (row number, text)
    parsed = _arrow_rows(data, start, end, delimiter, width, quoted, header_end, odd)
    if parsed is None:
        return None  # many rows of other widths
    lines = _row_lines(name, data, (start, end), parsed, odd, body_lines, skipped, quoted,
                       piece, limits, fmt)
    if lines is None:
        return None
    if trailer_line:
        trailer = _parse_trailer(name, trailer_line, last, fmt)
    return _ArrowRead(parsed, width, lines + piece.line_base, odd, trailer, positions,
                      delimiter)


def _text_bounds(data: bytes) -> tuple[int, int]:
    """Where a CSV file's text begins (past a BOM) and ends (the end of its last line that
    is not empty, without its line end)."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    limit = len(data)
    while limit > start and data[limit - 1] in b"\r\n":
        limit -= 1
    return start, limit


def _body(data: bytes, start: int, last_start: int, limit: int, piece: _Piece, skipped: int,
          last_is_trailer: bool) -> tuple[int, int, int]:
    """Where the body ends (before a trailer, else at the last line's end), its lines from
    the header's (the rows' physical line numbers: every line after the header but the
    empty ones, which Arrow skips), and the trailer's line number (0 without one). The
    line ends are counted once."""
    body_lines = _count(data, b"\n", start, last_start)
    if piece.last and last_start > start and last_is_trailer:
        return last_start, body_lines, skipped + body_lines + 1 + piece.line_base
    body_lines += _count(data, b"\n", last_start, limit) + 1  # the last line's end is missing
    return limit, body_lines, 0


def _row_lines(name: str, data: bytes, body: tuple[int, int], parsed: pa.Table,
               odd: list[tuple[int, str]], body_lines: int, skipped: int, quoted: bool,
               piece: _Piece, limits: ReadLimits, fmt: FileFormat) -> np.ndarray | None:
    """The physical line number of each row Arrow read or set aside (within the piece):
    every line of the body but the empty ones, or, where quoted fields span lines in a
    body without empty lines, as far apart as the line ends inside them (refused where
    they go past the limits, as the general path refuses them). None where rows and lines
    do not agree: the general path reads the file."""
    start, end = body
    # Each row Arrow read, or set aside, took one line at least, and an empty line none:
    # as many rows as lines leave no empty line to look for (a scan of the whole file).
    blank_lines = (np.zeros(0, dtype=np.int64) if parsed.num_rows + len(odd) == body_lines - 1
                   else _blank_lines(data, start, end))
    lines = skipped + np.delete(np.arange(2, body_lines + 1, dtype=np.int64), blank_lines - 2)
    if quoted and not odd and not len(blank_lines) and parsed.num_rows != len(lines):
        spanned = _spanned_lines(parsed, len(lines), skipped)
        if spanned is None:
            return None
        _check_spanning_rows(name, parsed, spanned + piece.line_base, limits,
                             fmt.trailer_marker)
        lines = spanned
    placed = parsed.num_rows + len(odd) == len(lines) and all(
        2 <= number < 2 + len(lines) for number, _ in odd)
    return lines if placed else None


def _last_line(data: bytes, start: int, last_start: int, last: list[str], delimiter: str,
               quoted: bool) -> tuple[int, list[str]] | None:
    """Where the last line that is not blank begins, and its cells, from the file's last
    line (`last_start`, `last`): blank lines at the end are skipped, as the general path
    skips them, so a trailer is the last line that is not blank. None where the general
    path is to read the file: a line beginning inside a quoted field (an odd number of
    quotes before it), bytes that are not UTF-8, a thousand blank lines."""
    for _ in range(1000):
        if not _is_blank(last) or last_start == start:
            return last_start, last
        if quoted and _count(data, b'"', start, last_start) % 2:
            return None
        line_end = last_start - 1
        last_start = max(data.rfind(b"\n", start, line_end) + 1, start)
        try:
            last = _cells(data[last_start:line_end].decode("utf-8").removesuffix("\r"),
                          delimiter)
        except UnicodeDecodeError:
            return None
    return None


def _arrow_rows(data: bytes, start: int, end: int, delimiter: str, width: int, quoted: bool,
                header_end: int, odd: list[tuple[int, str]]) -> pa.Table | None:
    """The body's rows as Arrow reads them: as wide as the header; else, where each row
    ends in empty cells (a delimiter at the end of each), as wide as the first row; else
    with the few rows of other widths set aside into `odd`. None when none of these reads."""
    parsed = _arrow_csv(data, start, end, delimiter, width, quoted)
    read_width = width
    if parsed is None:  # rows of another width: wider ones may end in empty cells
        read_width = max(width, _first_row_width(data, header_end + 1, delimiter))
        if read_width > width:
            parsed = _arrow_csv(data, start, end, delimiter, read_width, quoted)
    if parsed is None:  # a few rows of other widths: set aside, read as the general path does
        parsed = _arrow_csv(data, start, end, delimiter, read_width, quoted, odd)
    return parsed


def _ends_a_trailer(data: bytes, start: int, line_start: int, fmt: FileFormat) -> bool:
    """Whether the row that the line at `line_start` ends (it begins inside a quoted
    field) may be a trailer: its first cell, as its first line (the nearest before with
    an even number of quotes before it) shows it, may be the trailer's marker. Also when
    that line is not found within a thousand lines."""
    marker = fmt.trailer_marker.upper()
    inside = True
    for _ in range(1000):
        line_end = line_start - 1
        line_start = max(data.rfind(b"\n", start, line_end) + 1, start)
        inside ^= data.count(b'"', line_start, line_end) % 2 == 1
        if not inside:
            first = data[line_start:line_end].decode("utf-8", errors="replace").lstrip()
            if not first.startswith('"'):
                return first.upper().startswith(marker)
            cell = first[1:].split('"', 1)[0].strip().upper()  # as far as this line has it
            return marker.startswith(cell) or cell.startswith(marker)
        if line_start == start:
            return True
    return True


def _fast_csv_grid(name: str, read: _ArrowRead, fmt: FileFormat, piece: _Piece = _WHOLE
                   ) -> _Grid:
    """The columns of what `_fast_csv_parse` read: cells trimmed, rows too wide found, rows
    of another width put back in their place, rows of empty cells skipped."""
    if read.table is None:
        raise RuntimeError("this read was made a grid already")
    width, lines, odd, trailer = read.width, read.lines, read.odd, read.trailer
    delimiter, positions = read.delimiter, read.positions
    rows = read.table.num_rows
    columns_read: list[pa.ChunkedArray | None] = list(read.table.columns)
    read.table = None
    trimmed = []
    for i in range(len(columns_read)):  # each untrimmed column is let go once trimmed
        trimmed.append(_trimmed(columns_read[i]))
        columns_read[i] = None
    shape_errors, wide = _cells_past_the_header(trimmed, width, rows)
    del trimmed[width:]
    if odd:
        trimmed, shape_errors, wide = _with_odd_rows(odd, delimiter, width, trimmed,
                                                     shape_errors, wide)
        rows = len(wide)
    blank = functools.reduce(pc.and_, (pc.equal(column, "") for column in trimmed))
    blank_rows = np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool) & ~wide
    if blank_rows.any():  # a row of empty cells: skipped like an empty line
        keep = ~blank_rows
        trimmed = [column.filter(pa.array(keep)) for column in trimmed]
        lines, shape_errors = lines[keep], shape_errors[keep]
        rows = len(lines)
        if rows == 0 and trailer is None and piece.whole:
            raise FileRejected(name, NO_ROWS)
    columns = {}
    joined: dict[int, pa.Array] = {}  # each column in one chunk, its blocks let go
    for col in fmt.columns:
        index = positions.get(col.field)
        if index is None:
            columns[col.field] = pd.Series([""] * rows, dtype="str")
        else:
            if index not in joined:
                joined[index], trimmed[index] = one_chunk(trimmed[index]), None
            columns[col.field] = arrow_text(joined[index])
    if rows and rows % PROGRESS_EVERY == 0:
        log.info("%s: %d rows read", name, rows)
    return _Grid(pd.DataFrame(columns), lines, pd.Series(shape_errors, dtype="str"), trailer,
                 f"csv ({delimiter})")


def _cells_past_the_header(trimmed: list[pa.ChunkedArray], width: int, rows: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's finding ('' or `_too_wide`) and whether it is too wide. The general path
    drops a row's empty cells past the header; what is left past it makes the row too
    wide, as wide as its last cell that is not empty."""
    shape_errors = np.full(rows, "", dtype=object)
    cells = np.zeros(rows, dtype=np.int64)
    for i in range(width, len(trimmed)):
        filled = np.asarray(pc.not_equal(trimmed[i], "").to_numpy(zero_copy_only=False),
                            dtype=bool)
        cells[filled] = i + 1
    wide = cells > 0
    if wide.any():
        shape_errors[wide] = [_too_wide(n, width) for n in cells[wide].tolist()]
    return shape_errors, wide


def _trimmed(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """`column` with its cells' leading and trailing whitespace trimmed; the column as it
    is when none of its cells begins or ends with a byte whitespace may be made of. Two
    bytes per cell are looked at, where a trim copies every cell (a file's thirteen
    columns at 1M rows: 0.05 s to look, 0.10-0.28 s to trim)."""
    if all(_plain_ends(chunk) for chunk in column.chunks):
        return column
    return pc.utf8_trim_whitespace(column)


def _plain_ends(texts: pa.Array) -> bool:
    """Whether every text of `texts` begins and ends with a printable ASCII byte (0x21 to
    0x7e), so that trimming whitespace leaves it as it is: a whitespace character is a
    byte up to 0x20 (a space or a control) or one of more than one byte, each 0x80 or
    above. Empty texts count as plain; a null does not."""
    if texts.null_count or not (pa.types.is_string(texts.type)
                                or pa.types.is_large_string(texts.type)):
        return False
    offsets = value_offsets(texts)
    filled = offsets[1:] > offsets[:-1]
    if not filled.any():
        return True
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)
    ends = np.concatenate([data[offsets[:-1][filled]], data[offsets[1:][filled] - 1]])
    return bool(((ends > 0x20) & (ends < 0x7f)).all())


#: At most this many rows of another width are set aside on Arrow's path (each is read
#: by Python's `csv`); a file with more takes the general path.
ODD_ROWS = 100_000


def _arrow_csv(data: bytes, start: int, end: int, delimiter: str, width: int, quoted: bool,
               odd: list[tuple[int, str]] | None = None) -> pa.Table | None:
    """data[start:end] after its header line as `width` text columns; None when a row is
    of another width (or the bytes are not UTF-8: the general path says where).

    With `odd`, rows of another width are skipped and kept there instead, with their
    number among the lines that are not empty (the header is 1), up to ODD_ROWS of them.
    Arrow numbers rows only when it reads on one thread."""
    def set_aside(row: pacsv.InvalidRow) -> str:
        if odd is None or row.number is None or len(odd) >= ODD_ROWS:
            return "error"
        odd.append((row.number, row.text))
        return "skip"

    # The handler is given each row as text: pyarrow prints a Python trace for a row that
    # is not UTF-8, where Arrow's own check, without a handler, only fails the read.
    if odd is not None and not _is_utf8(data, start, end):
        return None
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(memoryview(data)[start:end])),
            read_options=pacsv.ReadOptions(column_names=[f"c{i}" for i in range(width)],
                                           skip_rows=1, block_size=1 << 24,
                                           use_threads=odd is None),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=quoted,
                                             invalid_row_handler=None if odd is None
                                             else set_aside),
            convert_options=pacsv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(width)},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid:
        return None


def _is_utf8(data: bytes, start: int, end: int) -> bool:
    """Whether data[start:end] is UTF-8 text, checked by Arrow in place (no copy, no
    decoded text)."""
    size = end - start
    text = pa.LargeStringArray.from_buffers(
        1, pa.py_buffer(np.array([0, size], dtype=np.int64)),
        pa.py_buffer(memoryview(data)[start:end]))
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _with_odd_rows(odd: list[tuple[int, str]], delimiter: str, width: int,
                   trimmed: list[pa.ChunkedArray], shape_errors: np.ndarray, wide: np.ndarray
                   ) -> tuple[list[pa.ChunkedArray], np.ndarray, np.ndarray]:
    """The rows Arrow set aside (`_arrow_csv`) read as the general path reads a row (empty
    cells past the header dropped, a short row's missing cells empty), put back in their
    places among Arrow's rows."""
    cells: list[list[str]] = [[] for _ in range(width)]
    errors, too_wide = [], []
    for _, text in odd:
        row = _fitted(_cells(text, delimiter), width)
        too_wide.append(len(row) > width)
        errors.append(_too_wide(len(row), width))
        for i in range(width):
            cells[i].append(row[i].strip() if i < len(row) else "")
    total = len(wide) + len(odd)
    at = np.array([number - 2 for number, _ in odd], dtype=np.int64)  # the header is 1
    order = np.empty(total, dtype=np.int64)  # Arrow's rows, then the odd ones, in line order
    order[np.setdiff1d(np.arange(total), at, assume_unique=True)] = np.arange(len(wide))
    order[at] = np.arange(len(wide), total)
    placed = pa.array(order)
    columns = [pa.chunked_array([*column.chunks, pa.array(cells[i], pa.string())],
                                pa.string()).take(placed)
               for i, column in enumerate(trimmed)]
    return (columns, np.concatenate([shape_errors, np.array(errors, dtype=object)])[order],
            np.concatenate([wide, np.array(too_wide, dtype=bool)])[order])


def _spanned_lines(parsed: pa.Table, data_lines: int, skipped: int) -> np.ndarray | None:
    """The physical line numbers of rows some of whose quoted fields span lines, in a body
    of `data_lines` lines after the header and no empty line: a row begins on the line
    after the previous row's last, which is as many lines further as the line ends inside
    its fields. Arrow keeps those line ends in the values. None when the lines do not add
    up (the general path then reads the file)."""
    inside = np.zeros(parsed.num_rows, dtype=np.int64)
    for column in parsed.columns:
        inside += np.asarray(pc.count_substring(column, "\n").to_numpy(), dtype=np.int64)
    if not parsed.num_rows or parsed.num_rows + int(inside.sum()) != data_lines:
        return None
    before = np.concatenate([[0], np.cumsum(inside)[:-1]])
    return skipped + 2 + np.arange(parsed.num_rows, dtype=np.int64) + before


def _check_spanning_rows(name: str, parsed: pa.Table, lines: np.ndarray, limits: ReadLimits,
                         marker: str) -> None:
    """`_check_spanning_row` for the rows Arrow read across lines, numbered `lines`: the
    longest span and the first trailer taken in, found column-wise."""
    spans = np.ones(parsed.num_rows, dtype=np.int64)
    swallowed = np.zeros(parsed.num_rows, dtype=bool)
    pattern = "(?i)\\n\\s*\"?" + re.escape(marker)
    for column in parsed.columns:
        spans += np.asarray(pc.count_substring(column, "\n").to_numpy(), dtype=np.int64)
        swallowed |= np.asarray(pc.match_substring_regex(column, pattern).to_numpy(
            zero_copy_only=False), dtype=bool)
    found = np.flatnonzero((spans > limits.max_quoted_lines) | swallowed)
    if len(found):  # the first such row, refused as the general path refuses it
        at = int(found[0])
        row = [str(parsed.column(i)[at].as_py()) for i in range(parsed.num_columns)]
        _check_spanning_row(name, int(lines[at]), int(spans[at]), row, limits, marker)


def _blank_lines(data: bytes, start: int, end: int) -> np.ndarray:
    """The physical line numbers of the empty lines (LF or CRLF) in data[start:end], whose
    first line is line 1 and not empty. Two `find` scans, and the line ends before each
    empty line counted once."""
    found = []
    for pattern in (b"\n\n", b"\n\r\n"):
        at = data.find(pattern, start, end)
        while at >= 0:
            found.append(at)
            at = data.find(pattern, at + 1, end)
    numbers = np.empty(len(found), dtype=np.int64)
    counted, before = start, 0
    for i, at in enumerate(sorted(found)):
        before += data.count(b"\n", counted, at + 1)
        counted = at + 1
        numbers[i] = before + 1  # the empty line follows the `before`-th line end
    return numbers


def _first_row_width(data: bytes, start: int, delimiter: str) -> int:
    """How many cells the first line from `start` that is not blank has (0 when there is
    none in the first bytes)."""
    line = _first_line(data, start=start)
    return 0 if line is None else len(_cells(line, delimiter))
