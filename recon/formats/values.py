"""The fields' values: amounts, dates and times, payment sources, parsed a column at a
time, each with the rows it could not parse.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon.core.calendar import WIB
from recon.core.money import MINOR_PER_UNIT
from recon.core.schemas import joined_values, one_chunk
from recon.formats.declaration import (
    DATE,
    DATETIME,
    MONEY,
    PAYMENT_SOURCE,
    TRANSACTION_TYPE,
    FileFormat,
    normalise_pay_option,
    shown_layout,
)

#: An amount: at most two decimals that are not zeros (12.3400 is 12.34).
MONEY_RE = r"^\s*[+-]?\d{1,15}(?:\.\d{0,2}0*)?\s*$"


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


def per_distinct(values: pd.Series, parse: Callable[[pd.Series], tuple[pd.Series, pd.Series]]
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
    ok = pc.fill_null(pc.match_substring_regex(text, MONEY_RE), False)
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
    `parse_times` does, each distinct text once."""
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
        parsed_slowly, _ = per_distinct(values[~fast], parse_times)
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


def parse_times(values: pd.Series) -> tuple[pd.Series, pd.Series]:
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


#: From this many rows a batch's columns are parsed two at a time, on two threads (Arrow's
#: and NumPy's kernels let go of the interpreter); fewer rows are parsed in turn, where
#: the threads cost more than they save (figures: `bench/ROUNDS.md`, the constants).
PARALLEL_ROWS = 100_000


#: The column kinds whose texts are parsed, not taken as they are, and what a row's
#: reason says of a text that cannot be parsed.
NOT_PARSED = {MONEY: "is not a decimal amount", DATETIME: "is not a date and time",
               DATE: "is not a YYYY-MM-DD date", TRANSACTION_TYPE: "is not PAYMENT or REFUND",
               PAYMENT_SOURCE: "is not OVO Cash or OVO Points"}


def not_parsed_text(kind: str, fmt: FileFormat) -> str:
    """What a row's reason says of a text of `kind` that the format cannot parse."""
    if kind == DATE:
        return f"is not a {shown_layout(fmt.date_format)} date"
    if kind == DATETIME and fmt.time_format:
        return f"is not a {shown_layout(fmt.time_format)} date and time"
    return NOT_PARSED[kind]


def _parsed(values: pd.Series, kind: str, fmt: FileFormat) -> tuple[pd.Series, ...]:
    """One column's texts parsed as its kind says: the values and the mask of the texts
    that are not such values (a time's WIB dates between them)."""
    if kind == MONEY:
        return per_distinct(with_decimal_point(values, fmt.decimal_separator), parse_money)
    if kind == DATETIME:
        moments, bad = (per_distinct(values, functools.partial(
            parse_local_times, layout=fmt.time_format)) if fmt.time_format
            else parse_datetime(values))
        return moments, wib_dates(moments), bad
    if kind == DATE:
        return per_distinct(values, functools.partial(parse_date, layout=fmt.date_format))
    if kind == TRANSACTION_TYPE:
        upper = values.str.upper()
        ok = upper.isin([fmt.payment_type, fmt.refund_type])
        return upper.where(ok, ""), ~ok
    return per_distinct(values, parse_pay_option)


def parsed_columns(raw: pd.DataFrame, fmt: FileFormat) -> dict[str, tuple[pd.Series, ...]]:
    """`_parsed` of each of the format's parsed columns, by field: two at a time, the
    slowest (the times) first, from PARALLEL_ROWS rows."""
    columns = sorted((col for col in fmt.columns if col.kind in NOT_PARSED),
                     key=lambda col: col.kind != DATETIME)
    if len(raw) < PARALLEL_ROWS:
        return {col.field: _parsed(raw[col.field], col.kind, fmt) for col in columns}
    with ThreadPoolExecutor(2, thread_name_prefix="recon-read") as pool:
        futures = {col.field: pool.submit(_parsed, raw[col.field], col.kind, fmt)
                   for col in columns}
        return {field: future.result() for field, future in futures.items()}
