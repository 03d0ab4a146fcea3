"""End-to-end benchmark: generate N payments with refunds and a settlement file with about
1% exceptions of every kind, run the real `recon run` on SQLite and PostgreSQL, and measure
the same data against the baselines (DuckDB SQL, datacompy, pandas.read_sql).

    make bench                      # N = 1,000,000
    BENCH_ROWS=200000 make bench
    BENCH_ROUNDS=5 make bench       # each same-data figure the median of 5 rounds (3)

Figures are printed and written to bench/out/results.md; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import platform
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recon.core.money import minor_text

if TYPE_CHECKING:
    from recon.core.result import ReconResult

ROOT = Path(__file__).resolve().parent.parent
S = dt.date(2026, 11, 30)
MERCHANT = "MB01"
WIB_OFFSET = np.timedelta64(7, "h")
PHASE_LINE = re.compile(r"Task run '(?P<task>[a-z]+)-[0-9a-f]+' - [a-z]+: .*"
                        r"\((?P<seconds>[0-9.]+) s, peak memory (?P<mib>[0-9]+) MiB\)")


def generate(n: int, folder: Path, seed: int = 5) -> dict[str, pd.DataFrame]:
    """Records and the settlement file (written to folder/inbox)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    refs = np.char.add("INV", np.char.zfill(ids.astype(str), 9))
    amount = rng.integers(10, 5000, n) * 500 * 100  # minor units
    start = np.datetime64("2026-11-26T17:00:00")  # 27 Nov 00:00 WIB in UTC
    utc = start + rng.integers(0, 3 * 86_400, n).astype("timedelta64[s]")
    kind = rng.random(n)
    utc = np.where(kind < 0.01, utc - np.timedelta64(2, "D"), utc)  # timing: earlier window
    status = np.where((kind >= 0.01) & (kind < 0.02), "06", "00")  # status mismatch
    option = np.where(rng.random(n) < 0.7, "OVO_CASH", "OVO_POINTS")
    payments = pd.DataFrame({"partner_reference_no": refs, "reference_no": refs,
                             "merchant_id": MERCHANT, "amount": amount, "pay_option": option,
                             "status": status, "transaction_time": utc})
    refunded = ids[(kind >= 0.10) & (kind < 0.12)]
    refunds = pd.DataFrame({
        "partner_refund_no": np.char.add("RF", np.char.zfill(refunded.astype(str), 9)),
        "original_partner_reference_no": refs[refunded],
        "refund_no": np.char.add("OVR", np.char.zfill(refunded.astype(str), 9)),
        "refund_amount": amount[refunded] // 2,
        "refund_time": np.minimum(utc[refunded] + np.timedelta64(3, "h"),
                                  np.datetime64("2026-11-29T16:59:00")),
        "status": "00"})

    settled = ~((kind >= 0.02) & (kind < 0.03))  # 1% missing in settlement
    gross = amount.copy()
    gross[(kind >= 0.03) & (kind < 0.04)] += 10_000  # amount mismatch
    rate = np.where(option == "OVO_CASH", 7, 5)
    mdr = (gross * rate + 500) // 1000
    mdr[(kind >= 0.04) & (kind < 0.05)] *= 3  # fee mismatch
    tax = (mdr * 11 + 50) // 100
    local = pd.Series(utc + WIB_OFFSET).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    pay_rows = pd.DataFrame({
        "MerchantInvoice": refs, "RefundInvoice": "", "OVOReferenceNo": refs,
        "TransactionType": "PAYMENT",
        "PaymentSource": np.where(option == "OVO_CASH", "OVO Cash", "OVO Points"),
        "TransactionDateTime": local, "gross": gross, "mdr": mdr, "tax": tax})[settled]
    ref_local = pd.Series(refunds["refund_time"].to_numpy() + WIB_OFFSET).dt.strftime(
        "%Y-%m-%d %H:%M:%S").to_numpy()
    ref_rows = pd.DataFrame({
        "MerchantInvoice": refunds["original_partner_reference_no"],
        "RefundInvoice": refunds["partner_refund_no"], "OVOReferenceNo": refunds["refund_no"],
        "TransactionType": "REFUND", "PaymentSource": "OVO Cash",
        "TransactionDateTime": ref_local, "gross": -refunds["refund_amount"].to_numpy(),
        "mdr": 0, "tax": 0})
    extra = max(n // 100, 1)
    ghosts = pay_rows.head(extra).assign(MerchantInvoice=lambda f: "GHOST" + f["MerchantInvoice"])
    rows = pd.concat([pay_rows, ref_rows, ghosts, pay_rows.head(max(n // 200, 1))],
                     ignore_index=True)
    rows["net"] = rows["gross"] - rows["mdr"] - rows["tax"]
    table = pd.DataFrame({
        "SettlementDate": S.isoformat(), "TransactionDateTime": rows["TransactionDateTime"],
        "MerchantID": MERCHANT, "StoreID": "", "MerchantInvoice": rows["MerchantInvoice"],
        "RefundInvoice": rows["RefundInvoice"], "OVOReferenceNo": rows["OVOReferenceNo"],
        "TransactionType": rows["TransactionType"], "PaymentSource": rows["PaymentSource"],
        "GrossAmount": _amounts(rows["gross"].to_numpy()),
        "MDRAmount": _amounts(rows["mdr"].to_numpy()),
        "TaxAmount": _amounts(rows["tax"].to_numpy()),
        "NetAmount": _amounts(rows["net"].to_numpy())})
    bad = table.index[:: max(n // 50, 1)][:50]
    table.loc[bad, "GrossAmount"] = "n/a"  # unreadable rows
    inbox = folder / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / f"OVO_SETTLEMENT_{MERCHANT}_{S:%Y%m%d}.csv"
    pacsv.write_csv(pa.Table.from_pandas(table, preserve_index=False), path,
                    pacsv.WriteOptions(quoting_style="needed"))
    return {"payments": payments, "refunds": refunds, "file": table}


def _amounts(minor: np.ndarray) -> np.ndarray:
    """Minor units as the decimal texts the files and tables hold."""
    return minor_text(minor).to_numpy(zero_copy_only=False)


def _utc_text(values: pd.Series) -> pd.Series:
    return pd.Series(values).dt.strftime("%Y-%m-%d %H:%M:%S")


def load_sqlite(url_path: Path, data: dict[str, pd.DataFrame]) -> None:
    from recon.store.engine import init_db, make_engine

    init_db(make_engine(f"sqlite:///{url_path}"))
    p, r = data["payments"], data["refunds"]
    with sqlite3.connect(url_path) as conn:
        conn.executemany(
            "INSERT INTO ovo_payments (partner_reference_no, reference_no, merchant_id, amount,"
            " currency, pay_option, status, transaction_time) VALUES (?,?,?,?,'IDR',?,?,?)",
            zip(p["partner_reference_no"], p["reference_no"], p["merchant_id"],
                _amounts(p["amount"].to_numpy()), p["pay_option"], p["status"],
                _utc_text(p["transaction_time"]), strict=True))
        conn.executemany(
            "INSERT INTO ovo_refunds VALUES (?,?,?,?,?,?)",
            zip(r["partner_refund_no"], r["original_partner_reference_no"], r["refund_no"],
                _amounts(r["refund_amount"].to_numpy()), _utc_text(r["refund_time"]),
                r["status"], strict=True))


def load_postgres(url: str, data: dict[str, pd.DataFrame]) -> None:
    import psycopg

    from recon.store.engine import init_db, make_engine

    init_db(make_engine(url))
    p, r = data["payments"], data["refunds"]
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE ovo_payments, ovo_refunds")
        payments = pd.DataFrame({
            "partner_reference_no": p["partner_reference_no"], "reference_no": p["reference_no"],
            "merchant_id": p["merchant_id"], "amount": _amounts(p["amount"].to_numpy()),
            "currency": "IDR", "pay_option": p["pay_option"], "status": p["status"],
            "transaction_time": _utc_text(p["transaction_time"]) + "+00"})
        refunds = pd.DataFrame({
            "partner_refund_no": r["partner_refund_no"],
            "original_partner_reference_no": r["original_partner_reference_no"],
            "refund_no": r["refund_no"], "refund_amount": _amounts(r["refund_amount"].to_numpy()),
            "refund_time": _utc_text(r["refund_time"]) + "+00", "status": r["status"]})
        for table, frame in (("ovo_payments", payments), ("ovo_refunds", refunds)):
            buffer = pa.BufferOutputStream()
            pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buffer,
                            pacsv.WriteOptions(include_header=False))
            with cur.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN "
                          "WITH (FORMAT csv)") as copy:
                copy.write(buffer.getvalue().to_pybytes())
        # Statistics, as autovacuum gathers them within a minute or so of a bulk load; the
        # loader is timed at once, and without them the planner takes the payments for
        # 148,000 rows and reads them all to find a few thousand keys.
        conn.commit()
        cur.execute("ANALYZE ovo_payments, ovo_refunds")


@contextlib.contextmanager
def prefect_server(folder: Path) -> Iterator[str]:
    """A `prefect server start` for the runs, as production has one (without it each
    command would start a temporary server, about 7 s)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                               "--host", "127.0.0.1", "--port", str(port), "--no-ui"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("prefect server start did not come up")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def run_recon(database: str, folder: Path, label: str, api_url: str,
              parts: int = 0) -> dict[str, object]:
    """The real command, end to end (`parts`: in parts on disk); phases from its log
    lines, and the process's peak memory."""
    env = {**os.environ, "RECON_ARCHIVE_DIR": str(folder / f"archive-{label}"),
           "RECON_MDR_RATES": "OVO Cash=0.007,OVO Points=0.005", "PREFECT_API_URL": api_url,
           "RECON_PARTS": str(parts), "RECON_SPILL_DIR": str(folder / "spill")}
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "recon"), "run", "--date", S.isoformat(),
         "--merchant", MERCHANT, "--database", database, "--source", str(folder / "inbox"),
         "--report-dir", str(folder / f"reports-{label}"), "--outbox",
         str(folder / f"outbox-{label}")], env=env, capture_output=True, text=True)
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"recon run on {label} failed: {done.stderr.strip()}")
    phases = {m["task"]: (float(m["seconds"]), int(m["mib"]))
              for m in PHASE_LINE.finditer(done.stdout)}
    return {"total": total, "phases": phases}


#: Each same-data figure is the median of this many timed rounds (`BENCH_ROUNDS`), the
#: baselines' and the project's alike: one round of the same code moved by a third from
#: run to run on this machine.
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", 3)))


def median_seconds(task: Callable[[], object]) -> float:
    """The median wall-clock seconds of ROUNDS calls of `task`."""
    times = []
    for _ in range(ROUNDS):
        gc.collect()
        started = time.perf_counter()
        task()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def duckdb_baseline(path: Path, payments: pd.DataFrame) -> None:
    """The issue's DuckDB SQL baseline: read the CSV, full outer join on MerchantInvoice =
    partner_reference_no, classify missing, unknown and amount mismatch."""
    import duckdb

    con = duckdb.connect()
    con.register("records", payments[["partner_reference_no", "amount"]])
    con.execute(f"""
        SELECT category, count(*) FROM (
          SELECT CASE WHEN r.partner_reference_no IS NULL THEN 'MISSING_IN_RECORDS'
                      WHEN s.MerchantInvoice IS NULL THEN 'MISSING_IN_SETTLEMENT'
                      WHEN TRY_CAST(s.GrossAmount AS DECIMAL(18,2)) * 100 <> r.amount
                        THEN 'AMOUNT_MISMATCH'
                      ELSE 'MATCHED' END AS category
          FROM (SELECT * FROM read_csv('{path}', all_varchar = true)
                WHERE TransactionType = 'PAYMENT') s
          FULL OUTER JOIN records r ON s.MerchantInvoice = r.partner_reference_no)
        GROUP BY category""").fetchall()
    con.close()


def typed_payments(payments: pd.DataFrame) -> pd.DataFrame:
    """The generated payments as the match takes them (the PAYMENTS columns it reads)."""
    from recon.formats.values import wib_dates

    typed = payments.assign(
        amount=lambda f: f["amount"].astype("Int64"), store_id="",
        transaction_time=lambda f: pd.to_datetime(f["transaction_time"]).dt.tz_localize("UTC"))
    typed["transaction_date"] = wib_dates(typed["transaction_time"])
    return typed


def read_and_match(path: Path, payments: pd.DataFrame) -> ReconResult:
    """The project's read of the file and its match against `payments` (`typed_payments`),
    with no refunds, ledger or open items: what the baselines are compared with."""
    from recon.core.calendar import WorkingCalendar
    from recon.core.fees import FeeRules
    from recon.core.match import match_settlement
    from recon.core.result import MatchContext
    from recon.core.schemas import LEDGER, OPEN_ITEMS, REFUNDS, empty_frame
    from recon.formats.ovo_v1 import OVO_V1
    from recon.formats.reader import read_settlement_file

    parsed = read_settlement_file(path, OVO_V1, S)
    ctx = MatchContext(MERCHANT, S, WorkingCalendar(), FeeRules(mdr_rates={}))
    return match_settlement(parsed.rows, payments, empty_frame(REFUNDS), empty_frame(LEDGER),
                            empty_frame(OPEN_ITEMS), ctx)


def datacompy_compare(path: Path, payments: pd.DataFrame) -> None:
    """The issue's datacompy baseline: `PandasCompare` of the file's payment rows and the
    payments, on key and amount."""
    import datacompy

    settlement = pd.read_csv(path, dtype=str, keep_default_na=False)
    settlement = settlement.loc[settlement["TransactionType"] == "PAYMENT"]
    left = pd.DataFrame({"key": settlement["MerchantInvoice"], "amount": pd.to_numeric(
        settlement["GrossAmount"], errors="coerce")})
    right = pd.DataFrame({"key": payments["partner_reference_no"],
                          "amount": payments["amount"] / 100})
    left = left.drop_duplicates("key")
    datacompy.PandasCompare(left, right, join_columns="key").all_mismatch()


def baselines(folder: Path, data: dict[str, pd.DataFrame], pg_url: str | None) -> dict[str, float]:
    from recon.formats.ovo_v1 import OVO_V1
    from recon.formats.reader import read_settlement_file

    path = next((folder / "inbox").glob("*.csv"))
    payments = typed_payments(data["payments"])
    results: dict[str, float] = {}
    results["duckdb baseline: read + join + classify"] = median_seconds(
        lambda: duckdb_baseline(path, data["payments"]))
    results["recon: read + match + classify"] = median_seconds(
        lambda: read_and_match(path, payments))

    results["datacompy PandasCompare on key and amount"] = median_seconds(
        lambda: datacompy_compare(path, data["payments"]))

    if pg_url:
        from sqlalchemy import create_engine

        engine = create_engine(pg_url)
        results["pandas.read_sql of the payments (PostgreSQL)"] = median_seconds(
            lambda: pd.read_sql("SELECT partner_reference_no, reference_no, merchant_id, "
                                "amount, pay_option, status, transaction_time "
                                "FROM ovo_payments", engine))
        engine.dispose()
        parsed = read_settlement_file(path, OVO_V1, S)
        results[RERUN_LOAD] = time_loader(pg_url, parsed.rows)
        results[NEXT_DAY_LOAD] = time_loader_after_a_day(pg_url, parsed.rows)
    return results


#: The generated file rewritten in other layouts a settlement file may come in; each is
#: read by the project's reader in a process of its own (its own peak memory).
LAYOUTS = ("as generated", "CRLF line ends", "a delimiter at the end of each row",
           "an empty line after every 1,000th row", "ISO 8601 times with an offset",
           "every 1,000th row a cell short", "a quoted line break in one cell")


def _layout(data: bytes, name: str) -> bytes:
    if name == "as generated":
        return data
    if name == "CRLF line ends":
        return data.replace(b"\n", b"\r\n")
    if name == "ISO 8601 times with an offset":
        return re.sub(rb"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)", rb"\1T\2+07:00", data)
    lines = data.split(b"\n")  # the rest rewrite lines
    head, body = lines[0], lines[1:]
    if name == "a delimiter at the end of each row":
        return b"\n".join([head, *(line + b"," if line else line for line in body)])
    if name == "an empty line after every 1,000th row":
        return b"\n".join([head, *(line + b"\n" if i % 1000 == 999 and line else line
                                   for i, line in enumerate(body))])
    if name == "every 1,000th row a cell short":
        return b"\n".join([head, *(line.rsplit(b",", 1)[0] if i % 1000 == 999 and line
                                   else line for i, line in enumerate(body))])
    if name == "a quoted line break in one cell":  # StoreID of the first row
        cells = body[0].split(b",")
        cells[3] = b'"A\nB"'
        return b"\n".join([head, b",".join(cells), *body[1:]])
    raise ValueError(f"no layout {name!r}")


_READ_ONE = """
import sys, time, datetime as dt
from pathlib import Path
from recon.formats.ovo_v1 import OVO_V1
from recon.formats.reader import read_settlement_file
started = time.perf_counter()
parsed = read_settlement_file(Path(sys.argv[1]), OVO_V1, dt.date.fromisoformat(sys.argv[2]))
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:")) // 1024
print(seconds, peak, len(parsed.rows), int((parsed.rows["invalid_reason"] != "").sum()))
"""


def read_layouts(folder: Path) -> list[str]:
    """Each layout's read: seconds, the reading process's peak memory, rows and unreadable
    rows (a short row is unreadable: its NetAmount is empty)."""
    data = next((folder / "inbox").glob("*.csv")).read_bytes()
    out = folder / "layouts"
    out.mkdir(exist_ok=True)
    lines = ["| layout | read | peak memory | rows | unreadable |", "|---|---|---|---|---|"]
    for number, name in enumerate(LAYOUTS):
        path = out / f"layout{number}.csv"
        path.write_bytes(_layout(data, name))
        done = subprocess.run([sys.executable, "-c", _READ_ONE, str(path), S.isoformat()],
                              capture_output=True, text=True, check=True)
        seconds, peak, rows, bad = done.stdout.split()
        lines.append(f"| {name} | {float(seconds):.2f} s | {peak} MiB | {int(rows):,} | "
                     f"{int(bad):,} |")
        path.unlink()
        print(lines[-1], flush=True)
    return lines


FIRST_LOAD = "recon loader (PostgreSQL), the date's first run"
RERUN_LOAD = "recon loader (PostgreSQL), the date re-run (its ledger already written)"
NEXT_DAY_LOAD = ("recon loader (PostgreSQL), the date re-run after a day of other payments "
                 "(another million entries in the ledger, of an earlier date)")


RERUN = "PostgreSQL, the date re-run"


BAD_DAY = "PostgreSQL, no records (every row flagged)"


def run_bad_day(admin_url: str, folder: Path, api_url: str) -> dict[str, object]:
    """The file run against a database of its own that holds no records: every row is
    flagged, as on a day the merchant's records did not arrive (the exceptions, the
    workbook and its CSV overflow at their largest). The database is dropped after."""
    from sqlalchemy import create_engine, text

    from recon.store.engine import init_db, make_engine

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS recon_bench_bad WITH (FORCE)"))
        conn.execute(text("CREATE DATABASE recon_bench_bad"))
    url = admin_url.rsplit("/", 1)[0] + "/recon_bench_bad"
    engine = make_engine(url)
    init_db(engine)
    engine.dispose()
    try:
        return run_recon(url, folder, "postgresql-bad-day", api_url)
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS recon_bench_bad WITH (FORCE)"))
        admin.dispose()


def vacuum_ledger(pg_url: str) -> None:
    """VACUUM ANALYZE the ledger after a run, as autovacuum would before the date's re-run
    (this machine's PostgreSQL runs with autovacuum off)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE recon_ledger"))
    engine.dispose()


def time_loader(pg_url: str, rows: pd.DataFrame) -> float:
    """The project's loader, as a run calls it (without the window loaded ahead): the
    median of ROUNDS loads after a first, so that connections and the database's caches
    are warm."""
    from sqlalchemy import create_engine

    from recon.core.calendar import WorkingCalendar
    from recon.store.load import load_run_inputs

    engine = create_engine(pg_url)
    covered = WorkingCalendar().covered_dates(S)
    load_run_inputs(engine, MERCHANT, S, covered, rows)
    seconds = median_seconds(lambda: load_run_inputs(engine, MERCHANT, S, covered, rows))
    engine.dispose()
    return seconds


def time_loader_after_a_day(pg_url: str, rows: pd.DataFrame) -> float:
    """The loader when the ledger also holds an earlier date's million entries of other
    payments, as a merchant's ledger does from its second day on: every file key is
    looked up among them. The entries are copies of the date's own, under other keys;
    they are deleted afterwards."""
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    earlier = S - dt.timedelta(days=3)
    copy = ("INSERT INTO recon_ledger SELECT merchant_id, :earlier, run_id, kind, "
            "'Y-' || settle_key, CASE WHEN record_key = '' THEN '' ELSE 'Y-' || record_key END, "
            "'Y-' || original_reference_no, amount, line_no FROM recon_ledger "
            "WHERE merchant_id = :merchant AND settlement_date = :day")
    with engine.begin() as conn:
        conn.execute(text(copy), {"earlier": earlier, "merchant": MERCHANT, "day": S})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE recon_ledger"))  # as autovacuum would, after a day
    try:
        return time_loader(pg_url, rows)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM recon_ledger WHERE merchant_id = :merchant "
                              "AND settlement_date = :earlier"),
                         {"merchant": MERCHANT, "earlier": earlier})
        engine.dispose()


def time_first_load(folder: Path, pg_url: str) -> float:
    """The loader before any run: what a day's run loads (a re-run of the date also
    passes over the ledger that date already wrote)."""
    from recon.formats.ovo_v1 import OVO_V1
    from recon.formats.reader import read_settlement_file

    rows = read_settlement_file(next((folder / "inbox").glob("*.csv")), OVO_V1, S).rows
    return time_loader(pg_url, rows)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 1_000_000)))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--skip-sqlite", action="store_true",
                        help="PostgreSQL only (the 10M run)")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-layouts", action="store_true",
                        help="do not time the reads of the file in other layouts")
    parser.add_argument("--parts", type=int, default=int(os.environ.get("BENCH_PARTS", 0)),
                        help="also re-run the date on PostgreSQL in this many parts on disk")
    parser.add_argument("--bad-day", action="store_true",
                        default=os.environ.get("BENCH_BAD_DAY", "") == "1",
                        help="also run the file against a PostgreSQL database without its "
                             "records, as on a day their sync failed: every row flagged")
    parser.add_argument("--pg", default=os.environ.get(
        "RECON_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    return parser.parse_args()


def _load_databases(args: argparse.Namespace, data: dict[str, pd.DataFrame],
                    sqlite_path: Path) -> str | None:
    """The generated records into SQLite (unless skipped) and a fresh PostgreSQL database;
    its URL, None where PostgreSQL cannot be had (the benchmark still reports SQLite)."""
    sqlite_path.unlink(missing_ok=True)
    if not args.skip_sqlite:
        print("loading SQLite ...", flush=True)
        load_sqlite(sqlite_path, data)
    try:
        from sqlalchemy import create_engine, text

        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS recon_bench WITH (FORCE)"))
            conn.execute(text("CREATE DATABASE recon_bench"))
        pg_url: str = args.pg.rsplit("/", 1)[0] + "/recon_bench"
        print("loading PostgreSQL ...", flush=True)
        load_postgres(pg_url, data)
    except Exception as exc:
        print(f"PostgreSQL skipped: {exc}", flush=True)
        return None
    return pg_url


def _recon_runs(args: argparse.Namespace, folder: Path, sqlite_path: Path,
                pg_url: str | None) -> dict[str, dict[str, object]]:
    """`recon run` as a process per database, then the re-runs, each printed as it ends."""
    runs: dict[str, dict[str, object]] = {}

    def keep(label: str, run: dict[str, object]) -> None:
        runs[label] = run
        print(f"{label}: {run['total']:.1f} s", flush=True)

    with prefect_server(folder) as api_url:
        if not args.skip_sqlite:
            keep("SQLite", run_recon(f"sqlite:///{sqlite_path}", folder, "sqlite", api_url))
        if pg_url:
            keep("PostgreSQL", run_recon(pg_url, folder, "postgresql", api_url))
            # The same date again, as an operator re-runs it: its ledger is written already.
            vacuum_ledger(pg_url)
            keep(RERUN, run_recon(pg_url, folder, "postgresql", api_url))
            if args.bad_day:
                keep(BAD_DAY, run_bad_day(args.pg, folder, api_url))
            if args.parts:  # the date once more, in parts on disk
                vacuum_ledger(pg_url)
                keep(f"PostgreSQL, a re-run in {args.parts} parts on disk",
                     run_recon(pg_url, folder, "postgresql", api_url, args.parts))
    return runs


def _runs_table(runs: dict[str, dict[str, object]]) -> list[str]:
    lines = ["| recon run | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for phase in ("fetch", "read", "load", "match", "persist", "workbook", "report", "notify"):
        cells = []
        for run in runs.values():
            phases = cast(dict[str, tuple[float, int]], run["phases"])
            seconds, mib = phases.get(phase, (float("nan"), 0))
            cells.append(f"{seconds:.2f} s, peak {mib} MiB")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| end to end (the command; persist and workbook overlap) | "
                 + " | ".join(f"{r['total']:.1f} s" for r in runs.values()) + " |")
    return lines


def _same_data_lines(compare: dict[str, float], pg_url: str | None) -> list[str]:
    lines = ["", f"Same data, each figure the median of {ROUNDS} timed rounds:", "",
             "| same data | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in compare.items()]
    if compare:
        own = compare["recon: read + match + classify"]
        duck = compare["duckdb baseline: read + join + classify"]
        datacompy_seconds = compare["datacompy PandasCompare on key and amount"]
        lines += ["", f"recon read + match + classify / DuckDB baseline: {own / duck:.1f}x; "
                  f"datacompy / recon: {datacompy_seconds / own:.1f}x"]
    if pg_url and compare:
        read_sql = compare["pandas.read_sql of the payments (PostgreSQL)"]
        lines.append(f"pandas.read_sql / recon loader: {read_sql / compare[FIRST_LOAD]:.1f}x "
                     f"(the date's first run), {read_sql / compare[RERUN_LOAD]:.1f}x (re-run), "
                     f"{read_sql / compare[NEXT_DAY_LOAD]:.1f}x (re-run after a day)")
    return lines


def main() -> None:
    args = _arguments()
    folder = Path(args.out) / f"n{args.rows}"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"generating {args.rows:,} payments ...", flush=True)
    data = generate(args.rows, folder)
    file_rows = len(data["file"])
    print(f"settlement file: {file_rows:,} rows", flush=True)
    sqlite_path = folder / "recon.db"
    pg_url = _load_databases(args, data, sqlite_path)
    first_load = (time_first_load(folder, pg_url)
                  if pg_url and not args.skip_baselines else None)
    # The runs get the machine's memory: the generated frames wait on disk meanwhile (at
    # 10M rows they are several GiB).
    payments_file = folder / "payments.parquet"
    data["payments"].to_parquet(payments_file)
    del data
    gc.collect()
    pa.default_memory_pool().release_unused()
    runs = _recon_runs(args, folder, sqlite_path, pg_url)
    compare = {} if args.skip_baselines else baselines(
        folder, {"payments": pd.read_parquet(payments_file)}, pg_url)
    if first_load is not None:
        compare[FIRST_LOAD] = first_load
    lines = [f"Rows: {args.rows:,} payments, {file_rows:,} settlement rows; machine: "
             f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
             "", *_runs_table(runs), *_same_data_lines(compare, pg_url)]
    if not args.skip_layouts:
        lines += ["", "The settlement file in other layouts, read alone:", "",
                  *read_layouts(folder)]
    lines.append(f"benchmark process peak memory: "
                 f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    report = "\n".join(lines)
    print("\n" + report)
    (Path(args.out) / "results.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
