"""A run's ledger into PostgreSQL two ways, alternating rounds on the same entries:
`recon.store.copy.copy_ledger` (binary COPY whose rows are encoded column-wise by Arrow and
NumPy) against psycopg's own binary COPY (`set_types` + `write_row`, a Python call per
row). `python bench/copy_ledger.py [--rows N] [--rounds R]`; needs the PostgreSQL server
of `make test` (RECON_BENCH_PG_ADMIN overrides where)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text

from recon.core.result import Ledger
from recon.store.copy import copy_ledger
from recon.store.engine import init_db, make_engine
from recon.store.tables import recon_ledger

ADMIN = os.environ.get("RECON_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
DAY = dt.date(2026, 11, 30)


def _ledger(rows: int) -> Ledger:
    keys = pd.Series([f"INV-{i:09d}" for i in range(rows)], dtype="str")
    return Ledger.of(pd.DataFrame({
        "kind": pd.Series(["PAYMENT"] * rows, dtype="str"), "settle_key": keys,
        "record_key": keys, "original_reference_no": keys,
        "amount": pd.Series(np.arange(rows) * 101 + 5, dtype="Int64"),
        "line_no": pd.Series(np.arange(2, rows + 2), dtype="int64")}))


def psycopg_write_row(conn: Any, ledger: Ledger) -> None:
    """The same entries, in the same order (by settle key), through psycopg's row API."""
    names = [column.name for column in recon_ledger.columns]
    order = np.argsort(ledger.settle_key.to_numpy(dtype=object), kind="stable")
    rows = zip(*(ledger.__dict__[name].to_numpy(dtype=object)[order]
                 for name in Ledger.COLUMNS), strict=True)
    cursor = conn.connection.driver_connection.cursor()
    statement = f"COPY {recon_ledger.name} ({', '.join(names)}) FROM STDIN (FORMAT binary)"
    with cursor, cursor.copy(statement) as copy:
        copy.set_types(["varchar", "date", "int8", "varchar", "varchar", "varchar", "varchar",
                        "numeric", "int4"])
        for kind, key, record, original, amount, line in rows:
            copy.write_row(("M001", DAY, 1, kind, key, record, original,
                            Decimal(int(amount)).scaleb(-2), line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    admin = make_engine(ADMIN)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("DROP DATABASE IF EXISTS recon_copy_bench WITH (FORCE)"))
        conn.execute(text("CREATE DATABASE recon_copy_bench"))
    engine = make_engine(ADMIN.rsplit("/", 1)[0] + "/recon_copy_bench")
    init_db(engine)
    ledger = _ledger(args.rows)
    ways: dict[str, Callable[[Any], None]] = {
        "recon.store.copy.copy_ledger": lambda conn: copy_ledger(conn, ledger, "M001", DAY, 1),
        "psycopg set_types + write_row": lambda conn: psycopg_write_row(conn, ledger)}
    seconds: dict[str, list[float]] = {label: [] for label in ways}
    for _ in range(args.rounds):
        for label, write in ways.items():
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {recon_ledger.name}"))
            with engine.begin() as conn:
                started = time.perf_counter()
                write(conn)
                seconds[label].append(time.perf_counter() - started)
            with engine.connect() as conn:
                written = conn.execute(text(f"SELECT count(*) FROM {recon_ledger.name}"))
                assert written.scalar_one() == args.rows
    engine.dispose()
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("DROP DATABASE IF EXISTS recon_copy_bench WITH (FORCE)"))
    admin.dispose()
    print(f"{args.rows:,} ledger entries into PostgreSQL, {args.rounds} rounds each:")
    for label, taken in seconds.items():
        print(f"  {label:<32} median {statistics.median(taken):.2f} s  "
              f"({', '.join(f'{t:.2f}' for t in taken)})")


if __name__ == "__main__":
    main()
