"""PostgreSQL's binary COPY of ledger entries, encoded from Arrow columns a batch at a time
(`bench/ROUNDS.md` has its comparison with psycopg's own COPY).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recon.core.result import Ledger
from recon.core.schemas import joined_values, text_array
from recon.store.engine import WRITE_BATCH_ROWS
from recon.store.tables import recon_ledger


def ledger_columns(ledger: Ledger) -> tuple[dict[str, pa.Array], pa.Array]:
    """The ledger's columns as Arrow arrays, a value per row of the file (amounts in minor
    units), and the positions of its entries among them in the order to write them: by
    settle key, so that the key index takes them page by page instead of at random (at 1M
    rows on PostgreSQL, COPY took 6.4 s sorted against 10.4 s in file order). Built in
    Arrow: at ten million rows, Python objects per value would cost gigabytes. The writer
    takes the entries in that order, a batch at a time where it writes in batches: the
    ledger is written while the match still holds every row, and the file's text columns
    are read where they lie (one chunk each: `text_array` copies none of them)."""
    columns = {name: pc.fill_null(text_array(getattr(ledger, name)), "")
               for name in ("kind", "settle_key", "record_key", "original_reference_no")}
    # A row that is no entry may have no amount; an entry always has one.
    columns["amount"] = pa.array(ledger.amount, pa.int64(), from_pandas=True)
    columns["line_no"] = pa.array(ledger.line_no, pa.int64())
    entry = np.zeros(len(ledger.line_no), dtype=bool)
    entry[ledger.at] = True
    by_key = pc.sort_indices(columns["settle_key"])
    return columns, by_key.filter(pa.array(entry[np.asarray(by_key)]))


#: PostgreSQL's binary COPY: the signature, flags and header extension; the end marker.
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)


_PG_COPY_END = b"\xff\xff"


LEDGER_COPY_COLUMNS = ("merchant_id", "settlement_date", "run_id", "kind", "settle_key",
                        "record_key", "original_reference_no", "amount", "line_no")


class LedgerAbandoned(Exception):
    """The run failed while its ledger was being written: the COPY was given up."""


def copy_ledger(conn: Any, ledger: Ledger, merchant: str, day: dt.date,
                 run_id: int, stop: Callable[[], bool] = lambda: False,
                 table: str = recon_ledger.name) -> None:
    """The ledger into PostgreSQL by binary COPY, inside the run's transaction: the server
    parses no text (at 1M rows about a fifth less of its time than CSV). Each row's bytes
    are joined column-wise by Arrow, a batch at a time; before each, `stop` may end the
    COPY (LedgerAbandoned) instead of writing ten million rows to roll them back.
    `table`: the ledger's, or one with the same columns (`_replace_ledger`'s staging)."""
    statement = (f"COPY {table} ({', '.join(LEDGER_COPY_COLUMNS)}) "
                 "FROM STDIN WITH (FORMAT binary)")
    cursor = conn.connection.driver_connection.cursor()
    with cursor, cursor.copy(statement) as copy:
        copy.write(_PG_COPY_HEADER)
        columns, order = ledger_columns(ledger)
        for start in range(0, len(order), WRITE_BATCH_ROWS):
            if stop():
                raise LedgerAbandoned(f"{merchant} {day}: the run failed")
            batch = order[start:start + WRITE_BATCH_ROWS]
            copy.write(_ledger_copy_rows({name: values.take(batch)
                                          for name, values in columns.items()},
                                         merchant, day, run_id))
        copy.write(_PG_COPY_END)


_PG_EPOCH = dt.date(2000, 1, 1)


def _fixed(values: np.ndarray) -> pa.Array:
    """A numpy record array as one binary value per record (its bytes as they are)."""
    width = values.dtype.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(values), [None, pa.py_buffer(values.tobytes())]).cast(
        pa.large_binary())


def _ledger_copy_rows(batch: dict[str, pa.Array], merchant: str, day: dt.date,
                      run_id: int) -> memoryview:
    """The binary COPY rows of a batch: per row the field count, then each field's byte
    length and value. Texts are UTF-8; the date is days since 2000-01-01; the amount is a
    NUMERIC of five base-10000 digits (four whole, one for the cents), which PostgreSQL
    strips of zeros as it reads it."""
    count = len(batch["line_no"])
    name = merchant.encode()
    lengths = {column: np.asarray(pc.binary_length(batch[column]).to_numpy(
        zero_copy_only=False), dtype=np.int64)
        for column in ("kind", "settle_key", "record_key", "original_reference_no")}
    start = np.zeros(count, dtype=[("fields", ">i2"), ("merchant_len", ">i4")])
    start["fields"], start["merchant_len"] = len(LEDGER_COPY_COLUMNS), len(name)
    head = np.zeros(count, dtype=[
        ("date_len", ">i4"), ("date", ">i4"), ("run_len", ">i4"), ("run", ">i8"),
        ("kind_len", ">i4")])
    head["date_len"], head["date"] = 4, (day - _PG_EPOCH).days
    head["run_len"], head["run"] = 8, run_id
    head["kind_len"] = lengths["kind"]

    def length(column: str) -> pa.Array:
        prefix = np.zeros(count, dtype=[("len", ">i4")])
        prefix["len"] = lengths[column]
        return _fixed(prefix)

    minor = np.asarray(batch["amount"].to_numpy(zero_copy_only=False), dtype=np.int64)
    whole, cents = np.divmod(np.abs(minor), 100)
    tail = np.zeros(count, dtype=[
        ("amount_len", ">i4"), ("ndigits", ">i2"), ("weight", ">i2"), ("sign", ">u2"),
        ("dscale", ">i2"), ("digits", ">i2", (5,)), ("line_len", ">i4"), ("line", ">i4")])
    tail["amount_len"] = 8 + 2 * 5
    tail["ndigits"], tail["weight"], tail["dscale"] = 5, 3, 2
    tail["sign"] = np.where(minor < 0, 0x4000, 0)
    for i, power in enumerate((10**12, 10**8, 10**4, 1)):
        tail["digits"][:, i] = (whole // power) % 10_000
    tail["digits"][:, 4] = cents * 100
    tail["line_len"] = 4
    tail["line"] = np.asarray(batch["line_no"].to_numpy(zero_copy_only=False), dtype=np.int64)
    pieces = [_fixed(start), pa.repeat(pa.scalar(name, pa.large_binary()), count),
              _fixed(head), batch["kind"], length("settle_key"), batch["settle_key"],
              length("record_key"), batch["record_key"], length("original_reference_no"),
              batch["original_reference_no"], _fixed(tail)]
    return joined_values(pc.binary_join_element_wise(
        *(piece.cast(pa.large_binary()) for piece in pieces), pa.scalar(b"", pa.large_binary())))
