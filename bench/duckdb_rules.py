"""Read + match + classify in DuckDB itself, a step nearer the specification each time,
beside the issue's DuckDB baseline, datacompy and the project's read + match: the same
generated data (`run_bench.generate`), one process, the tasks taking turns round by round.
It tells how near 2x the baseline and 5x datacompy a reader and matcher written as DuckDB
queries could come.

    .venv/bin/python bench/duckdb_rules.py [--rows 1000000] [--rounds 6]

- "duckdb baseline": the issue's query (`run_bench.duckdb_baseline`).
- "duckdb, typed read": DuckDB's own CSV reader types the thirteen columns (a row it
  cannot type is dropped: no line number, no reason); the payment rows get the payment
  categories in the specification's order (a second time in the file, no record, not
  paid, amount, timing, the net arithmetic); the exceptions into pandas.
- "duckdb, typed read with line numbers": the same, each row numbered as it is read
  (the ledger keeps every row's line, the workbook each exception's).
- "duckdb, the reader's checks": every field read as text with its row's line number,
  typed and checked with a one-line reason per field as the reader does; then the same
  payment categories, invalid rows, refund rows without a refund record, and the paid
  payments no valid row settles (missing in settlement); exceptions and missing into
  pandas, counts by category.
- "recon": `run_bench.read_and_match`, every rule of the specification.

No DuckDB query here has refunds by three keys, duplicates against earlier dates, fee
rates, open items, flags or deltas: as in `make bench`'s same-data figures, the match is
given no refunds, ledger, open items or fee rates. The category counts of each are
printed beside the project's. Line numbers are row numbers
plus one: right for the generated file (no quoted line breaks, no empty lines).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
from run_bench import (
    MERCHANT,
    S,
    datacompy_compare,
    duckdb_baseline,
    generate,
    read_and_match,
    typed_payments,
)

from recon.core.calendar import WorkingCalendar
from recon.core.categories import PAID_STATUSES
from recon.formats.declaration import (
    DATE,
    DATETIME,
    MONEY,
    OVO_V1,
    PAYMENT_SOURCE,
    TRANSACTION_TYPE,
)
from recon.formats.values import MONEY_RE, NOT_PARSED

if TYPE_CHECKING:
    import duckdb

    from recon.core.result import ReconResult

#: The dates the benchmark's settlement date covers (WIB), as an SQL list of dates.
COVERED = ", ".join(f"DATE '{day}'" for day in WorkingCalendar().covered_dates(S))
#: The paid statuses, as an SQL list.
PAID = ", ".join(f"'{status}'" for status in sorted(PAID_STATUSES))
#: The amount columns, and what the queries call their minor units (the reader's fields).
AMOUNTS = {col.header: col.field for col in OVO_V1.columns if col.kind == MONEY}
#: The payment categories, first that holds wins; `p` a payment row, `c` its record.
PAYMENT_CATEGORY = f"""
    CASE WHEN p.nth > 1 THEN 'DUPLICATE_SETTLEMENT'
         WHEN c.amount IS NULL THEN 'MISSING_IN_RECORDS'
         WHEN c.status NOT IN ({PAID}) THEN 'STATUS_MISMATCH'
         WHEN p.gross <> c.amount THEN 'AMOUNT_MISMATCH'
         WHEN CAST(timezone('Asia/Jakarta', c.transaction_time) AS DATE)
              NOT IN ({COVERED}) THEN 'TIMING_DIFFERENCE'
         WHEN p.net <> p.gross - p.mdr - p.tax THEN 'FEE_MISMATCH'
         ELSE 'MATCHED' END"""


def _connect(records: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("records", records)
    return con


def typed_read(path: Path, records: pd.DataFrame, line_numbers: bool = False) -> dict[str, int]:
    """DuckDB types the file as it reads it; rows it cannot type are dropped. With
    `line_numbers` each row kept gets its number, and the exceptions carry it."""
    con = _connect(records)
    types = {DATE: "DATE", DATETIME: "TIMESTAMP", MONEY: "DECIMAL(18,2)"}
    columns = ", ".join(f"'{col.header}': '{types.get(col.kind, 'VARCHAR')}'"
                        for col in OVO_V1.columns)
    con.execute(f"""
        CREATE TEMP TABLE classified AS
        WITH f AS (SELECT {"row_number() OVER () + 1 AS line_no, " if line_numbers else ""}*
                   FROM read_csv('{path}', header = true, columns = {{{columns}}},
                                          ignore_errors = true)),
        p AS (SELECT {"line_no, " if line_numbers else ""}MerchantInvoice AS inv, {", ".join(
                f"CAST({name} * 100 AS BIGINT) AS {short}" for name, short in AMOUNTS.items())},
                     row_number() OVER (PARTITION BY MerchantInvoice) AS nth
              FROM f WHERE upper(TransactionType) = 'PAYMENT')
        SELECT {"p.line_no, " if line_numbers else ""}p.inv, p.gross,
               {PAYMENT_CATEGORY} AS category
        FROM p LEFT JOIN records c ON p.inv = c.partner_reference_no""")
    # The exceptions into pandas, as a run's workbook and store take them.
    con.execute("SELECT * FROM classified WHERE category <> 'MATCHED'").df()
    counts = dict(con.execute("SELECT category, count(*) FROM classified GROUP BY ALL").fetchall())
    con.close()
    return counts


def _money(name: str) -> str:
    """The amount of the text column `name` in minor units where it is one by the reader's
    pattern, else NULL."""
    return (f"CASE WHEN regexp_matches({name}, '{MONEY_RE}') "
            f"THEN CAST(CAST(trim({name}) AS DECIMAL(18,2)) * 100 AS BIGINT) END")


def _reason(name: str, value: str, kind: str) -> str:
    """The reader's reason for a text of the column `name` (of `kind`) that gave no
    `value`: the header, the text quoted (its first 40 characters), what it is not."""
    return (f"CASE WHEN {value} IS NULL THEN '{name} ''' || left(coalesce({name}, ''), 40) "
            f"|| ''' {NOT_PARSED[kind]}' END")


def with_checks(path: Path, records: pd.DataFrame) -> dict[str, int]:
    """Every field as text, typed and checked with its reason, then the categories."""
    con = _connect(records)
    reasons = ", ".join([
        _reason("SettlementDate", "sdate", DATE),
        _reason("TransactionDateTime", "t_utc", DATETIME),
        "CASE WHEN coalesce(trim(MerchantInvoice), '') = '' "
        "THEN 'MerchantInvoice is empty' END",
        _reason("TransactionType", "ttype", TRANSACTION_TYPE),
        _reason("PaymentSource", "source", PAYMENT_SOURCE),
        *(_reason(name, short, MONEY) for name, short in AMOUNTS.items())])
    con.execute(f"""
        CREATE TEMP TABLE rows AS
        WITH raw AS (SELECT row_number() OVER () + 1 AS line_no, *
                     FROM read_csv('{path}', header = true, all_varchar = true)),
        typed AS (
          SELECT *, trim(MerchantInvoice) AS inv,
            CASE upper(trim(TransactionType)) WHEN 'PAYMENT' THEN 'PAYMENT'
                 WHEN 'REFUND' THEN 'REFUND' END AS ttype,
            CASE lower(trim(PaymentSource)) WHEN 'ovo cash' THEN 'OVO_CASH'
                 WHEN 'ovo points' THEN 'OVO_POINTS' END AS source,
            timezone('Asia/Jakarta', try_strptime(TransactionDateTime, '%Y-%m-%d %H:%M:%S'))
              AS t_utc,
            try_strptime(SettlementDate, '%Y-%m-%d') AS sdate,
            {", ".join(f"{_money(name)} AS {short}" for name, short in AMOUNTS.items())}
          FROM raw)
        SELECT line_no, inv, ttype, source, t_utc, sdate,
               {", ".join(AMOUNTS.values())},
               concat_ws('; ', {reasons}) AS reason
        FROM typed""")
    con.execute(f"""
        CREATE TEMP TABLE classified AS
        WITH p AS (SELECT *, row_number() OVER (PARTITION BY inv ORDER BY line_no) AS nth
                   FROM rows WHERE reason = '' AND ttype = 'PAYMENT')
        SELECT p.line_no, p.inv, p.gross, c.amount, '' AS reason, {PAYMENT_CATEGORY} AS category
        FROM p LEFT JOIN records c ON p.inv = c.partner_reference_no
        UNION ALL
        SELECT line_no, inv, gross, NULL, reason,
               CASE WHEN reason <> '' THEN 'INVALID_ROW' ELSE 'MISSING_IN_RECORDS' END
        FROM rows WHERE reason <> '' OR ttype = 'REFUND'""")
    missing = con.execute(f"""
        SELECT c.* FROM records c
        ANTI JOIN (SELECT inv FROM rows WHERE reason = '' AND ttype = 'PAYMENT') r
          ON r.inv = c.partner_reference_no
        WHERE c.status IN ({PAID}) AND CAST(timezone('Asia/Jakarta', c.transaction_time)
              AS DATE) IN ({COVERED})""").df()
    # The exceptions into pandas, as a run's workbook and store take them.
    con.execute("SELECT * FROM classified WHERE category <> 'MATCHED'").df()
    counts = dict(con.execute(
        "SELECT category, count(*) FROM classified GROUP BY ALL").fetchall())
    con.close()
    return {**counts, "MISSING_IN_SETTLEMENT": len(missing)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duckdb-rules-") as folder:
        print(f"generating {args.rows:,} payments ...", flush=True)
        data = generate(args.rows, Path(folder))
        path = next((Path(folder) / "inbox").glob("*.csv"))
        payments = typed_payments(data["payments"])
        records = payments[["partner_reference_no", "amount", "status", "transaction_time"]]
        tasks: dict[str, Callable[[], object]] = {
            "duckdb baseline": lambda: duckdb_baseline(path, data["payments"]),
            "duckdb, typed read": lambda: typed_read(path, records),
            "duckdb, typed read with line numbers": lambda: typed_read(path, records, True),
            "duckdb, the reader's checks": lambda: with_checks(path, records),
            "recon": lambda: read_and_match(path, payments),
            "datacompy": lambda: datacompy_compare(path, data["payments"])}
        times: dict[str, list[float]] = {name: [] for name in tasks}
        last: dict[str, object] = {}  # each task's result in the last round
        for round_no in range(1, args.rounds + 1):
            for name, task in tasks.items():
                gc.collect()
                started = time.perf_counter()
                last[name] = task()
                times[name].append(time.perf_counter() - started)
            print(f"round {round_no}: " + ", ".join(
                f"{name} {seconds[-1]:.2f} s" for name, seconds in times.items()), flush=True)
    own = cast("ReconResult", last["recon"]).counts
    checked = cast("dict[str, int]", last["duckdb, the reader's checks"])
    typed = cast("dict[str, int]", last["duckdb, typed read"])
    base, datacompy = np.array(times["duckdb baseline"]), np.array(times["datacompy"])
    print(f"\n{args.rows:,} payments, settlement date {S}, merchant {MERCHANT}; "
          f"{args.rounds} rounds\n")
    print("| task | seconds (median) | / the baseline (median of the rounds) "
          "| datacompy / it |\n|---|---|---|---|")
    for name, seconds in times.items():
        own_times = np.array(seconds)
        print(f"| {name} | {own_times.min():.2f}–{own_times.max():.2f} "
              f"({np.median(own_times):.2f}) | {np.median(own_times / base):.1f}x "
              f"| {np.median(datacompy / own_times):.1f}x |")
    print("\n| category | recon | duckdb, the reader's checks | duckdb, typed read |\n"
          "|---|---|---|---|")
    for category, count in own.items():
        print(f"| {category} | {count:,} | {checked.get(category, 0):,} "
              f"| {typed.get(category, 0):,} |")


if __name__ == "__main__":
    main()
