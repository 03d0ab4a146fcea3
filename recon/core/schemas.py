"""Declared frame schemas, one per stage, checked where data enters a stage.

Money is integer minor units (sen; 1 IDR = 100) in nullable ``Int64`` columns. Times are
``datetime64[ns, UTC]``; business dates are ``datetime.date`` objects (WIB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

#: Normalised settlement rows, as the reader returns them.
SETTLEMENT_ROWS: Mapping[str, str] = {
    "line_no": "int64",
    "settlement_date": "object",
    "transaction_time": "datetime64[ns, UTC]",
    "transaction_date": "object",
    "merchant_id": "str",
    "store_id": "str",
    "merchant_invoice": "str",
    "refund_invoice": "str",
    "ovo_reference_no": "str",
    "transaction_type": "str",
    "payment_source": "str",
    "gross": "Int64",
    "mdr": "Int64",
    "tax": "Int64",
    "net": "Int64",
    "invalid_reason": "str",
}

#: Text columns of the rows that hold a few distinct values over millions of rows (one
#: merchant, its stores, two payment sources): the reader makes them categoricals, a byte
#: per row instead of the text and its 8-byte offset, and `conform` keeps them so.
SETTLEMENT_LABELS = ("merchant_id", "store_id", "payment_source")

#: Text columns of the payments that hold a few distinct values over millions of rows:
#: the store loads them as categoricals (`label_column`), and `conform` keeps them so.
PAYMENT_LABELS = ("merchant_id", "store_id", "pay_option", "status")

#: Payment records (ovo_payments), as the store loads them.
PAYMENTS: Mapping[str, str] = {
    "partner_reference_no": "str",
    "reference_no": "str",
    "merchant_id": "str",
    "store_id": "str",
    "amount": "Int64",
    "pay_option": "str",
    "status": "str",
    "transaction_time": "datetime64[ns, UTC]",
    "transaction_date": "object",
}

#: Refund records (ovo_refunds), as the store loads them.
REFUNDS: Mapping[str, str] = {
    "partner_refund_no": "str",
    "original_partner_reference_no": "str",
    "refund_no": "str",
    "refund_amount": "Int64",
    "refund_time": "datetime64[ns, UTC]",
    "refund_date": "object",
    "status": "str",
}

#: What earlier settlement dates settled (the ledger), as the store loads it.
LEDGER: Mapping[str, str] = {
    "settlement_date": "object",
    "kind": "str",
    "settle_key": "str",
    "record_key": "str",
    "original_reference_no": "str",
    "amount": "Int64",
    "line_no": "int64",
}

#: MISSING_IN_SETTLEMENT items opened by earlier settlement dates and open as of S.
OPEN_ITEMS: Mapping[str, str] = {
    "exception_id": "int64",
    "opened_date": "object",
    "kind": "str",
    "record_key": "str",
    "amount": "Int64",
    "record_date": "object",
}


class SchemaError(ValueError):
    """A frame handed to a stage does not have the declared columns."""


def empty_frame(schema: Mapping[str, Any]) -> pd.DataFrame:
    """No rows, the columns of `schema` (names and pandas types), sharing no data."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in schema.items()})


def conform(frame: pd.DataFrame, schema: Mapping[str, str], stage: str) -> pd.DataFrame:
    """Return `frame` with exactly the schema's columns in order, cast to their types.

    Raises SchemaError naming the stage and every missing column.
    """
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise SchemaError(f"{stage}: missing column(s) {', '.join(missing)}")
    out = frame.loc[:, list(schema)]  # copy-on-write: no column is copied until changed
    for name, dtype in schema.items():
        if dtype == "str" and isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = _filled_labels(out[name])
        elif dtype == "str":
            out[name] = out[name].fillna("").astype(str)
        elif str(out[name].dtype) != dtype and dtype != "object":
            out[name] = out[name].astype(dtype)
    return out.reset_index(drop=True)


def _filled_labels(values: pd.Series) -> pd.Series:
    """A categorical text column with '' where a value is missing, still categorical."""
    if not values.isna().any():
        return values
    if "" not in values.cat.categories:
        values = values.cat.add_categories([""])
    return values.fillna("")


def label_column(values: pd.Series, normalise: Callable[[Any], str] = str) -> pd.Series:
    """A column of a few distinct values as a categorical of their texts, `normalise` of
    each ('' where a value is missing): `normalise` is called once per distinct value (as
    the column holds it: a text, a date), and each row takes a code of a byte or two
    instead of its text and an 8-byte offset."""
    codes, distinct = pd.factorize(values)
    names = [normalise(value) for value in distinct] + [""]  # code -1 (missing): ''
    categories = sorted(set(names))
    position = {name: i for i, name in enumerate(categories)}
    recode = np.array([position[name] for name in names], dtype=np.int32)
    return pd.Series(pd.Categorical.from_codes(recode[codes], pd.Index(categories, dtype="str")),
                     index=values.index)


def concat_labelled(frames: list[pd.DataFrame], labels: Iterable[str],
                    sort_categories: bool = False) -> pd.DataFrame:
    """`pd.concat` of frames with fresh positions, their `labels` columns kept categorical
    where every frame has them so (pandas makes text of categoricals whose categories
    differ): one categorical of every frame's values, `sort_categories` as the matcher's
    own are, where the frames' categories differ."""
    kept = [name for name in labels
            if all(isinstance(frame[name].dtype, pd.CategoricalDtype) for frame in frames)
            and any(frame[name].dtype != frames[0][name].dtype for frame in frames)]
    joined = pd.concat([frame.drop(columns=kept) for frame in frames], ignore_index=True)
    for name in kept:
        joined[name] = pd.Series(union_categoricals([frame[name] for frame in frames],
                                                    sort_categories=sort_categories),
                                 index=joined.index)
    return joined.loc[:, list(frames[0].columns)]


TEXT = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype
_TEXT_TYPES = {pa.string(): TEXT, pa.large_string(): TEXT}


def text_array(values: pd.Series | pa.Array | Iterable[str]) -> pa.Array:
    """A text column (or any strings) as one Arrow large_string array; a pandas "str" or
    categorical column or an Arrow array is taken without copying through Python."""
    if isinstance(values, pa.Array):
        return values.cast(pa.large_string())
    if isinstance(values, pd.Index):  # its array, not a Python string per value
        values = pd.Series(values.array)
    elif not isinstance(values, pd.Series):
        values = pd.Series(list(values), dtype="str")
    if isinstance(values.dtype, pd.CategoricalDtype):  # a dictionary, decoded by Arrow
        return one_chunk(pa.array(values).cast(pa.large_string()))
    return one_chunk(pa.array(values.astype("str")))


def one_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`values` as one array (texts with 64-bit offsets, which hold more than 2 GB). A text
    column of one chunk is read by `text_array` in place; one of several is copied at each
    read (the file comes in blocks, the database in batches)."""
    if pa.types.is_string(values.type):
        values = values.cast(pa.large_string())
    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values


def text_isin(values: pd.Series, keys: pd.Series | pa.Array | Iterable[str]) -> pd.Series:
    """values.isin(keys) for text columns, computed by Arrow without Python objects
    (pandas' own isin turns a large key list into Python strings first)."""
    found = pc.is_in(text_array(values), value_set=text_array(keys))
    return pd.Series(np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool),
                     index=values.index)


#: From this many values to look among, `positions_in` joins through DuckDB, which hashes
#: the smaller side and probes on every core. Arrow's `index_in` hashes the values looked
#: among, on one thread, and wins below this size, where DuckDB's start costs more
#: (figures: `bench/ROUNDS.md`, the constants).
JOIN_FROM = 200_000


def positions_in(values: pa.Array, within: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """For each of `values`: whether `within` holds it, and the position of its first
    occurrence there (-1 where it does not). One hash lookup, no Python objects."""
    within = within.cast(values.type)
    if len(within) >= JOIN_FROM and values.null_count == 0 and within.null_count == 0:
        return joined_positions(values, within)
    position = pc.index_in(values, value_set=within)
    found = np.asarray(position.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return found, np.asarray(pc.fill_null(position, -1).to_numpy(zero_copy_only=False),
                             dtype=np.intp)


def joined_positions(values: pa.Array, within: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """`positions_in` as a DuckDB join of the two arrays (no nulls in either) on their
    values, by position. Texts are equal in DuckDB as in Arrow: byte for byte.

    Each lookup opens an in-memory database of its own and closes it (0.03 s to open):
    one kept open for the process held on to about 80 MiB more after each 1M-key join.
    A database per lookup also needs no care across threads or forked workers."""
    import duckdb

    database = duckdb.connect(":memory:")
    try:
        database.register("recon_values", pa.table({
            "k": values, "q": pa.array(np.arange(len(values), dtype=np.int64))}))
        database.register("recon_within", pa.table({
            "k": within, "p": pa.array(np.arange(len(within), dtype=np.int64))}))
        pairs = database.sql("SELECT q, p FROM recon_values JOIN recon_within USING (k)"
                             ).to_arrow_table()
    finally:
        database.close()
    at = np.asarray(pairs.column("q").to_numpy(), dtype=np.intp)
    first = np.asarray(pairs.column("p").to_numpy(), dtype=np.intp)
    found = np.zeros(len(values), dtype=bool)
    found[at] = True
    position = np.full(len(values), -1, dtype=np.intp)
    if int(found.sum()) == len(at):  # each value found once: `within` has no repeats
        position[at] = first
    else:  # a value `within` holds more than once: its first occurrence
        position[found] = np.iinfo(np.intp).max
        np.minimum.at(position, at, first)
    return found, position


def found_in(values: pa.Array, many: pa.Array) -> np.ndarray:
    """Whether each of the distinct `values` is one of `many`: the few values are hashed
    and the many probed, not the other way round."""
    return found_both_ways(values, many)[0]


def found_both_ways(values: pa.Array, many: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Whether each of the distinct `values` is one of `many`, and whether each of `many`
    is one of `values`: one hash of `values`, `many` probed once."""
    found, at = positions_in(many, values)
    hit = np.zeros(len(values), dtype=bool)
    hit[at[found]] = True
    return hit, found


def value_offsets(values: pa.Array) -> np.ndarray:
    """Where each value of a text or binary array begins in its data buffer, and where the
    last one ends (one more than the values), as the array holds them: 32- or 64-bit."""
    if not len(values):
        return np.zeros(1, dtype=np.int64)
    wide = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    return np.frombuffer(values.buffers()[1], dtype=np.int64 if wide else np.int32)[
        values.offset:values.offset + len(values) + 1]


def joined_values(values: pa.Array) -> memoryview:
    """The values of a text or binary array (none null) one after another, as they lie in
    its data buffer: no Python object per value, no copy."""
    if not len(values):
        return memoryview(b"")
    offsets = value_offsets(values)
    return memoryview(values.buffers()[2])[offsets[0]:offsets[-1]]


def arrow_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as a frame, its text columns as pandas "str" columns."""
    return table.to_pandas(types_mapper=_TEXT_TYPES.get)


def arrow_text(values: pa.Array | pa.ChunkedArray) -> pd.Series:
    """An Arrow string array as a pandas "str" column, without copying through Python."""
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    return values.to_pandas(types_mapper=_TEXT_TYPES.get)
