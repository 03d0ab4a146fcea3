"""Database adapter: create tables, load what a run needs, persist a run atomically.

SQLAlchemy Core only, portable across SQLite, PostgreSQL and MariaDB/MySQL. Times in
databases without a zone (SQLite, MariaDB) are UTC; PostgreSQL uses timestamptz.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import adbc_driver_manager
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    cast,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from recon import categories as cat
from recon.calendar import WIB
from recon.errors import ConfigError, StoreError
from recon.matching import Ledger, ReconResult
from recon.money import minor_text
from recon.parts import part_numbers, payment_groups
from recon.reader import date_objects, wib_dates
from recon.schemas import (
    LEDGER,
    OPEN_ITEMS,
    PAYMENT_LABELS,
    PAYMENTS,
    REFUNDS,
    arrow_frame,
    concat_labelled,
    conform,
    empty_frame,
    found_both_ways,
    found_in,
    joined_values,
    label_column,
    one_chunk,
    positions_in,
    text_array,
)
from recon.spill import PartWriter, disk_schema, disk_table, read_part, spill_folder
from recon.tables import (
    metadata,
    ovo_payments,
    ovo_refunds,
    recon_exceptions,
    recon_ledger,
    recon_locks,
    recon_runs,
)

log = logging.getLogger(__name__)

def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


#: Plain scheme -> the driver this project installs.
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
                   "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


#: How long a connection attempt to a database server may take before it is an error.
CONNECT_TIMEOUT_SECONDS = 10


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's folder is created if needed.

    ``postgresql://`` (and ``postgres://``) use psycopg 3 and ``mysql://``/``mariadb://``
    PyMySQL, the drivers installed here.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database URL {safe_url(url)} is not valid") from exc
    if parsed.drivername in DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=DEFAULT_DRIVERS[parsed.drivername])
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 60}
    elif parsed.get_backend_name() in {"mysql", "mariadb"}:
        # Times are stored as UTC: make the session zone UTC whatever the server's is.
        kwargs["connect_args"] = {"init_command": "SET time_zone = '+00:00'",
                                  "connect_timeout": CONNECT_TIMEOUT_SECONDS}
    elif parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        kwargs["pool_recycle"] = 3600
    try:
        return create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"no database driver for {safe_url(url)} ({exc})") from exc


#: The tables a run needs; a database without them has not been set up (`recon init-db`).
RUN_TABLES = ("ovo_payments", "ovo_refunds", "recon_runs", "recon_exceptions", "recon_ledger",
              "recon_locks")


def check_database(url: str, merchant_ids: Sequence[str] = ()) -> list[str]:
    """Before a run: the database can be reached and holds the run's tables (ConfigError
    naming `recon init-db` if not, StoreError if it cannot be reached), within seconds.
    Nothing is created, not even a SQLite file. The `merchant_ids` of which the database
    holds no payment and no run."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database URL {safe_url(url)} is not valid") from exc
    init = f"run: recon init-db --database '{safe_url(url)}'"
    database = parsed.database or ""
    if (parsed.get_backend_name() == "sqlite" and database not in {"", ":memory:"}
            and not Path(database).is_file()):
        raise ConfigError(f"database {database} does not exist; to create it, {init}")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            missing = [name for name in RUN_TABLES
                       if not engine.dialect.has_table(conn, name)]
            if missing:
                raise ConfigError(f"database {safe_url(url)} has no {', '.join(missing)} "
                                  f"table(s); to create them, {init}")
            unknown = []
            for merchant in merchant_ids:
                seen = any(conn.execute(select(table.c.merchant_id).where(
                    table.c.merchant_id == merchant).limit(1)).first() is not None
                    for table in (ovo_payments, recon_runs))
                if not seen:
                    unknown.append(merchant)
            return unknown
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    finally:
        engine.dispose()


def database_error(engine: Engine, exc: Exception) -> StoreError:
    """One line naming the database (no password) and what its driver said."""
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(detail).split())[:300]
    return StoreError(f"database {safe_url(str(engine.url))}: {text}")


def init_db(engine: Engine) -> list[str]:
    """Create every table that does not exist yet; returns the names created."""
    try:
        with engine.begin() as conn:
            existing = set(engine.dialect.get_table_names(conn))
            metadata.create_all(conn, checkfirst=True)
            _add_missing_columns(conn)
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return [t.name for t in metadata.sorted_tables if t.name not in existing]


def _add_missing_columns(conn: Any) -> None:
    """Columns added to a table after a database was made (nullable ones only)."""
    t = recon_locks
    columns = {c["name"] for c in inspect(conn).get_columns(t.name)}
    for column in t.columns:
        if column.name not in columns and column.nullable:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {t.name} ADD COLUMN {column.name} {kind}"))


def to_utc(values: pd.Series) -> pd.Series:
    """Database times (a zoned column, aware or naive-UTC datetimes, or text) ->
    datetime64[ns, UTC]."""
    if values.empty:
        return pd.Series(dtype="datetime64[ns, UTC]", index=values.index)
    if isinstance(values.dtype, pd.DatetimeTZDtype):  # Arrow's timestamptz (ADBC)
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    text = values.map(lambda v: v.isoformat() if isinstance(v, dt.datetime) else v)
    return pd.to_datetime(text, format="ISO8601", utc=True).astype("datetime64[ns, UTC]")


def _minor(column: Any) -> Any:
    return cast(func.round(column * 100), BigInteger)


def _as_frame(rows: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


@dataclass(frozen=True)
class RunInputs:
    """What the store hands the matching engine for one settlement date."""

    payments: pd.DataFrame
    refunds: pd.DataFrame
    ledger: pd.DataFrame
    open_items: pd.DataFrame


def _window(dates: Sequence[dt.date]) -> tuple[dt.datetime, dt.datetime]:
    """UTC bounds around the covered WIB dates, a day wider; exact filtering is in pandas."""
    start = dt.datetime.combine(min(dates) - dt.timedelta(days=1), dt.time())
    end = dt.datetime.combine(max(dates) + dt.timedelta(days=2), dt.time())
    return start.replace(tzinfo=dt.UTC), end.replace(tzinfo=dt.UTC)


#: The planner's cost of a page read out of order on the connection that joins the key
#: tables (PostgreSQL's default, 4, is for spinning disks). With it a few thousand keys
#: are probed in a primary key's index rather than by reading the whole table: the 14,500
#: invoices of a 1M-row file outside the window took 0.23 s against all 1M payments,
#: 0.05 s through the index. The window's own range scans keep the default: at 1.1 the
#: planner read each half of a 1M-row window by its time index, 1.7x slower.
KEY_LOOKUP_PAGE_COST = 1.1

#: The settings of a connection that looks keys up (`_ArrowLookups.use_lookup_settings`): the page
#: cost above, and no parallel workers. Their queries run beside the window's load on a
#: 2-core machine, where a worker takes a core from it: the window's refunds, found by
#: hashing the merchant's 1M payments in three processes, took 0.2 s each (0.6 s of CPU);
#: through the payments' primary key, 0.09 s in one.
KEY_LOOKUP_SETTINGS = (f"SET random_page_cost = {KEY_LOOKUP_PAGE_COST}",
                       "SET max_parallel_workers_per_gather = 0")

#: The sample ANALYZE takes of a key table, as PostgreSQL's statistics target (300 rows
#: per unit): the planner needs a key table's size and whether its keys repeat, which 300
#: rows tell, not a histogram of its keys. At the default, 100 (30,000 rows), a million
#: keys took 0.09-0.13 s to analyze; at 1, 2.4 ms (psql, alone).
KEY_TABLE_STATISTICS = 1

#: From this many ledger entries per key looked up, the ledger's lookups by settle key
#: probe its primary key (`_ArrowLookups.probing_ledger`). The planner hashes a million
#: keys and reads the whole ledger, which is fast while the ledger is small (1.0-1.4 s
#: against 1M entries) and grows with it: 16 s against 21M, against 3.6 s by probes
#: (sorted keys, 2.9 us each), which grow with the keys only.
LEDGER_PROBE_RATIO = 4

#: The per-connection temporary tables of lookup keys a load joins against, one per kind
#: of key: a query reads only the kinds it needs, not a million keys of another kind.
KEY_TAGS = ("file", "rinv", "rno", "oref", "pay", "rorig", "rec_only", "rkey")
LOAD_KEYS = {tag: Table(f"recon_load_keys_{tag}", MetaData(),
                        Column("k", String(255), nullable=False), prefixes=["TEMPORARY"])
             for tag in KEY_TAGS}


def _keyed(columns: Sequence[Any], column: Any, tags: Sequence[str], *conditions: Any) -> Any:
    """SELECT `columns` WHERE `conditions` hold and `column` is one of the loaded keys
    with one of `tags`: a SELECT per key table, joined by UNION ALL (a row found through
    two tables comes twice; the callers drop repeats).

    PostgreSQL's planner then knows each key table's size from its statistics. Of the keys
    of several tables in one subquery it assumed 200 distinct (a UNION's default), and so
    probed the ledger's index a key at a time for a file's million invoices: 9.5 s against
    a ledger holding one earlier date of a million entries, where the hash join it now
    chooses takes 1.0-1.4 s."""
    selects = [select(*columns).where(*conditions, column.in_(select(LOAD_KEYS[tag].c.k)))
               for tag in tags]
    return selects[0] if len(selects) == 1 else union_all(*selects)


class _Lookups(Protocol):
    """One load's connection: keys into LOAD_KEYS, queries into frames."""

    dialect: Any

    def add_keys(self, keys: dict[str, pa.Array]) -> None: ...

    def fetch(self, query: Any, names: Sequence[str]) -> pd.DataFrame: ...

    def probing_ledger(self, keys: int) -> contextlib.AbstractContextManager[None]: ...


class _SqlLookups:
    """Through SQLAlchemy (SQLite, MariaDB): executemany in, driver rows out."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.dialect = conn.dialect

    def __enter__(self) -> _SqlLookups:
        self._drop()
        for table in LOAD_KEYS.values():
            table.create(self.conn)
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:  # after a failure the next load drops them
            self._drop()

    def _drop(self) -> None:
        for table in LOAD_KEYS.values():
            if self.dialect.name == "sqlite":
                self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table.name}")
            else:
                self.conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {table.name}")

    def add_keys(self, keys: dict[str, pa.Array]) -> None:
        marker = "?" if self.dialect.paramstyle == "qmark" else "%s"
        for tag, values in keys.items():
            if len(values):
                self.conn.exec_driver_sql(
                    f"INSERT INTO {LOAD_KEYS[tag].name} (k) VALUES ({marker})",
                    [(k,) for k in values.to_pylist()])

    def fetch(self, query: Any, names: Sequence[str]) -> pd.DataFrame:
        return _object_frame(self.conn.execute(query).fetchall(), names)

    def probing_ledger(self, keys: int) -> contextlib.AbstractContextManager[None]:
        """The planner's own choice (`_ArrowLookups.probing_ledger`)."""
        return contextlib.nullcontext()


def _object_frame(rows: Sequence[Any], names: Sequence[str]) -> pd.DataFrame:
    """Driver rows as a frame of object columns named `names` (typed by the caller)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pd.DataFrame({name: pd.Series(values, dtype="object")
                         for name, values in zip(names, columns, strict=True)})


class _ArrowLookups:
    """The same on PostgreSQL through ADBC: keys go in by COPY, rows come back as Arrow.

    A query goes to the server with its values written in (`fetch_table`): ADBC streams
    the rows of a query without parameters through COPY, a batch at a time, but holds the
    whole result of one with parameters in libpq's memory before it converts any of it.
    At 10M payments that took 10.4 s and peaked at 2.9 GB, against 6.3 s and 0.9 GB."""

    def __init__(self, engine: Engine, key_lookups: bool = False) -> None:
        import adbc_driver_postgresql.dbapi as adbc

        url = engine.url.set(drivername="postgresql")
        self.connection = adbc.connect(url.render_as_string(hide_password=False))
        self.cursor = self.connection.cursor()
        # The written-in texts double their quotes and nothing else: a backslash in a
        # text literal is then a backslash, whatever the server's default.
        self.cursor.execute("SET standard_conforming_strings = on")
        if key_lookups:
            self.use_lookup_settings()
            # Only the key tables are analyzed on this connection (`add_keys`).
            self.cursor.execute(f"SET default_statistics_target = {KEY_TABLE_STATISTICS}")
        self.dialect = postgresql.dialect()  # compiles only: never connected

    def use_lookup_settings(self) -> None:
        """From now on this connection's queries plan for keys found through an index
        (`KEY_LOOKUP_SETTINGS`)."""
        for statement in KEY_LOOKUP_SETTINGS:
            self.cursor.execute(statement)

    def __enter__(self) -> _ArrowLookups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cursor.close()
        self.connection.close()  # the temporary tables go with the session

    def add_keys(self, keys: dict[str, pa.Array]) -> None:
        for tag, values in keys.items():
            self.cursor.adbc_ingest(LOAD_KEYS[tag].name, pa.table({"k": values.cast(pa.string())}),
                                    mode="create", temporary=True)
        # Statistics let the planner choose between probing and hashing a key table.
        self.cursor.execute(f"ANALYZE {', '.join(LOAD_KEYS[tag].name for tag in keys)}")

    @contextlib.contextmanager
    def probing_ledger(self, keys: int) -> Iterator[None]:
        """The queries inside look `keys` keys up in the ledger's primary key one by one
        when the ledger holds more than LEDGER_PROBE_RATIO entries per key; otherwise the
        planner chooses, and hashes the keys against a read of the ledger. Without keys
        there is nothing to probe."""
        if not keys:
            yield
            return
        size = self.fetch_table(text(
            "SELECT reltuples::bigint FROM pg_class "
            "WHERE oid = to_regclass('recon_ledger')"), ["rows"]).column("rows").to_pylist()
        if not size or size[0] is None or size[0] <= LEDGER_PROBE_RATIO * keys:
            yield  # never analyzed (-1) or small for the keys
            return
        self.cursor.execute("SET enable_hashjoin = off")
        self.cursor.execute("SET enable_mergejoin = off")
        try:
            yield
        finally:
            self.cursor.execute("RESET enable_hashjoin")
            self.cursor.execute("RESET enable_mergejoin")

    def fetch(self, query: Any, names: Sequence[str]) -> pd.DataFrame:
        return arrow_frame(self.fetch_table(query, names))

    def fetch_table(self, query: Any, names: Sequence[str]) -> pa.Table:
        self.cursor.execute(_written_in(query, self.dialect))
        return self.cursor.fetch_arrow_table().rename_columns(list(names))


def _written_in(query: Any, dialect: Any) -> str:
    """`query` as SQL text with its values written in, for PostgreSQL with standard
    conforming strings: texts quoted (quotes doubled), numbers, and times with their
    offset. The values are the run's merchant, dates and bounds: the keys, which come from
    the file, go in through key tables."""
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _dates(values: pd.Series) -> pd.Series:
    """Database dates (date objects; text from SQLite) -> datetime.date objects."""
    if values.empty or isinstance(values.iloc[0], dt.date):
        return values.astype("object")
    parsed = pd.to_datetime(values.astype("str"), format="%Y-%m-%d")
    return date_objects(parsed, values.index)


def _distinct(column: pd.Series) -> pa.Array:
    """The distinct non-empty texts of `column`, as an Arrow array."""
    return _named(pc.unique(text_array(column)))


def _named(keys: pa.Array) -> pa.Array:
    """The non-empty `keys`."""
    return keys.filter(pc.not_equal(keys, ""))


class WindowLoad:
    """The payments and refunds of the covered window, and the ledger entries of other
    dates whose settle key is one of those payments' keys, loading on a connection of
    their own while the file is read: they do not depend on it. The lookups the file's
    keys need follow in `load_run_inputs`; this load's database errors surface there.

    The ledger's lookup is a join in the database of the window's payments with the
    ledger: a million keys of the file are not sent to be joined against, and the lookup,
    whose time grows with the ledger, is done while the file is read. The window holds
    every payment the file names but a few (other dates, unknown keys); `load_run_inputs`
    looks those up by their keys.

    The load runs in a daemon thread: a run that fails before it needs the window (a
    rejected file, an interrupt) ends at once instead of waiting for the query, and the
    connection closes with the process or when the query ends.

    `alone`: nothing else runs meanwhile (the loader needs the window at once), so on
    PostgreSQL the payments come in two halves on two connections. Beside the file's read
    one connection is enough: two took the cores from the read (at 1M rows the read step
    took 6.4 s against 4.6 s, and the load was no faster).

    The payments and refunds are handed over (`records`) before the ledger's entries
    (`ledger`): the loader looks the file's other keys up while the ledger's join runs.
    Alone, at 1M rows with a day of other entries in the ledger, the join took 0.47-0.70 s
    after the payments, which the loader waited for."""

    def __init__(self, engine: Engine, merchant_id: str, settlement_date: dt.date,
                 covered: Sequence[dt.date], alone: bool = False) -> None:
        self.key = (merchant_id, settlement_date, tuple(covered))
        self._holds_off_writers = engine.dialect.name == "sqlite"
        self._records: Future[tuple[pd.DataFrame, pd.DataFrame]] = Future()
        self._ledger: Future[pd.DataFrame] = Future()
        task = partial(_settle_window, self._records, self._ledger,
                       partial(_load_window, engine, merchant_id, settlement_date, covered,
                               alone))
        # Each connection to an in-memory SQLite database is a database of its own.
        if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
            task()
        else:
            threading.Thread(target=task, name="recon-window", daemon=True).start()

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The window's payments and refunds, handed over once: this object does not keep
        a million rows alive for the rest of the run."""
        future, self._records = self._records, _taken_already()
        return future.result()

    def ledger(self) -> pd.DataFrame:
        """The window's ledger entries, handed over once."""
        future, self._ledger = self._ledger, _taken_already()
        return future.result()

    def result(self) -> Window:
        """The whole window, handed over once."""
        return Window(*self.records(), self.ledger())

    def let_writers_in(self) -> None:
        """On SQLite a reader holds off every writer: wait until the load has ended (an
        error is raised by `records` or `ledger`). Called before the run lock is taken."""
        if self._holds_off_writers:
            futures_wait([self._records, self._ledger])


def _taken_already() -> Future[Any]:
    """What stands for a part of a window's load once it is handed over."""
    taken: Future[Any] = Future()
    taken.set_exception(RuntimeError("the window's load was taken already"))
    return taken


@dataclass(frozen=True)
class Window:
    """What `WindowLoad` loads: the window's payments (PAYMENTS) and refunds (as the
    database gives them), and the ledger entries of the merchant's other dates whose
    settle key is one of those payments' keys (as `_ledger_of` gives them)."""

    payments: pd.DataFrame
    refunds: pd.DataFrame
    ledger: pd.DataFrame


#: What a window's load calls with the window's payments and refunds once it has them.
OnRecords = Callable[[pd.DataFrame, pd.DataFrame], None]


def _settle_window(records: Future[tuple[pd.DataFrame, pd.DataFrame]],
                   ledger: Future[pd.DataFrame],
                   task: Callable[[OnRecords], pd.DataFrame]) -> None:
    """Run a window's load (`_load_window`): its payments and refunds into `records` when
    it has them, its ledger entries into `ledger`; a failure into each not yet set."""
    try:
        ledger.set_result(task(lambda payments, refunds: records.set_result(
            (payments, refunds))))
    except BaseException as exc:  # raised where the window is asked for
        for future in (records, ledger):
            if not future.done():
                future.set_exception(exc)


def _settle_future(future: Future[Any], task: Callable[[], Any]) -> None:
    future.set_running_or_notify_cancel()
    try:
        future.set_result(task())
    except BaseException as exc:  # raised where the result is asked for
        future.set_exception(exc)


def _load_window(engine: Engine, merchant_id: str, settlement_date: dt.date,
                 covered: Sequence[dt.date], halves: bool,
                 on_records: OnRecords) -> pd.DataFrame:
    """The window's payments and refunds, given to `on_records`, then its ledger entries,
    returned."""
    start, end = _window(covered)
    if engine.dialect.name == "postgresql":
        return _arrow_window(engine, merchant_id, settlement_date, covered, start, end, halves,
                             on_records)
    with engine.connect() as conn:
        lookups = _SqlLookups(conn)
        lo, hi = start.replace(tzinfo=None), end.replace(tzinfo=None)
        payments = _payment_frame(lookups.fetch(*_window_payments(lookups, merchant_id, lo, hi)),
                                  merchant_id)
        on_records(payments, _window_refunds(lookups, merchant_id, lo, hi))
        return _window_ledger(lookups, merchant_id, settlement_date, lo, hi, len(payments))


@dataclass(frozen=True)
class SpilledPayments:
    """The window's payments on disk by part (`spill_window_payments`)."""

    paths: list[Path]
    counts: list[int]

    def payments(self, part: int) -> pd.DataFrame:
        """The part's payments, of the PAYMENTS types (`conform`)."""
        return conform(read_part(self.paths[part], PAYMENT_LABELS), PAYMENTS, "payments")


#: Payments a batch of the window's on their way to disk holds (SQLite, MariaDB; ADBC
#: sends PostgreSQL's in batches of its own).
SPILL_PAYMENT_ROWS = 500_000


def spill_window_payments(engine: Engine, merchant_id: str, covered: Sequence[dt.date],
                          folder: Path, parts: int, groups: dict[str, str],
                          batch_rows: int = SPILL_PAYMENT_ROWS) -> SpilledPayments:
    """The window's payments (what `WindowLoad` loads as its payments) into `parts` files
    under `folder`, each payment in the part of its group (`part_numbers`), a batch from
    the database at a time: memory for one batch, where the window whole is about a row
    of the file per payment. `folder` is made here (it must not exist) and removed when
    the spill fails: `StoreError` for the database, `SpillFailed` for the disk."""
    start, end = _window(covered)
    with spill_folder(folder, "the window's payments"):
        try:
            with PartWriter(folder, "payments", parts, disk_schema(PAYMENTS)) as writer:
                for raw in _window_payment_batches(engine, merchant_id, start, end,
                                                   batch_rows):
                    frame = _payment_frame(raw, merchant_id)
                    if frame.empty:
                        continue
                    table = disk_table(frame, PAYMENTS, PAYMENT_LABELS)
                    numbers = part_numbers(frame["partner_reference_no"], groups, parts)
                    del frame
                    writer.add(table, numbers)
        except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
            raise database_error(engine, exc) from exc
    return SpilledPayments(writer.paths, writer.counts)


def _window_payment_batches(engine: Engine, merchant_id: str, start: dt.datetime,
                            end: dt.datetime, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The window's payments as the database gives them, a batch at a time."""
    if engine.dialect.name == "postgresql":
        with _ArrowLookups(engine) as arrow:
            query, names = _window_payments(arrow, merchant_id, start, end)
            arrow.cursor.execute(_written_in(query, arrow.dialect))
            for batch in arrow.cursor.fetch_record_batch():
                yield arrow_frame(pa.Table.from_batches([batch]).rename_columns(list(names)))
        return
    with engine.connect() as conn:
        query, names = _window_payments(_SqlLookups(conn), merchant_id,
                                        start.replace(tzinfo=None), end.replace(tzinfo=None))
        result = conn.execution_options(stream_results=True).execute(query)
        for rows in result.partitions(batch_rows):
            yield _object_frame(rows, names)


def _arrow_window(engine: Engine, merchant_id: str, settlement_date: dt.date,
                  covered: Sequence[dt.date], start: dt.datetime, end: dt.datetime,
                  halves: bool, on_records: OnRecords) -> pd.DataFrame:
    """The window through ADBC (`_load_window`). With `halves` the payments come in two
    halves of the covered days, on two connections at once: each server process scans and
    sends its half (at 1M rows 0.77–0.89 s, against 0.90–0.91 s on one connection). The
    refunds and the ledger's entries follow on the first connection."""
    middle, later = end, None
    if halves:
        first_day, last_day = min(covered), max(covered) + dt.timedelta(days=1)
        middle = (dt.datetime.combine(first_day, dt.time(), WIB)
                  + (last_day - first_day) / 2).astimezone(dt.UTC)
        later = Future[pa.Table]()
        threading.Thread(target=_settle_future, name="recon-window-half", daemon=True,
                         args=(later, partial(_arrow_payments, engine, merchant_id, middle,
                                              end))).start()
    with _ArrowLookups(engine) as arrow:
        table = arrow.fetch_table(*_window_payments(arrow, merchant_id, start, middle))
        arrow.use_lookup_settings()  # its range scan done: the refunds' payments are found by key
        if later is not None:  # waited for: its connection closes when its query ends
            table = pa.concat_tables([table, later.result()])
        # The database finds the refunds and joins the ledger while the payments become a
        # frame here.
        refunds, ledger = Future[pd.DataFrame](), Future[pd.DataFrame]()
        payments = table.num_rows

        def queries() -> pd.DataFrame:  # the refunds as soon as found, then the entries
            _settle_future(refunds, partial(_window_refunds, arrow, merchant_id, start, end))
            refunds.result()  # the refunds' failure is the ledger's too
            return _window_ledger(arrow, merchant_id, settlement_date, start, end, payments)

        threading.Thread(target=_settle_future, args=(ledger, queries),
                         name="recon-window-queries", daemon=True).start()
        try:
            # Each column in one chunk (ADBC sends a batch at a time), one at a time.
            names, columns = table.column_names, table.columns
            del table
            for i, column in enumerate(columns):
                columns[i] = one_chunk(column)
                del column
            on_records(_payment_frame(arrow_frame(pa.table(columns, names=names)),
                                      merchant_id), refunds.result())
            return ledger.result()
        finally:
            futures_wait([ledger])  # the connection is not closed under its queries


def _window_queries(lookups: _Lookups, merchant_id: str, settlement_date: dt.date,
                    lo: Any, hi: Any, payments: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The window's refunds and ledger entries, on the connection that read its payments
    (`payments` of them), once they are read."""
    return (_window_refunds(lookups, merchant_id, lo, hi),
            _window_ledger(lookups, merchant_id, settlement_date, lo, hi, payments))


def _arrow_payments(engine: Engine, merchant_id: str, lo: dt.datetime,
                    hi: dt.datetime) -> pa.Table:
    with _ArrowLookups(engine) as arrow:
        return arrow.fetch_table(*_window_payments(arrow, merchant_id, lo, hi))


def _window_payments(lookups: _Lookups, merchant_id: str, lo: Any,
                     hi: Any) -> tuple[Any, list[str]]:
    """The query of the window's payments from `lo` to `hi`, and its column names: the
    payment columns but the merchant, which the query fixes."""
    t = ovo_payments
    columns = [c for c in _payment_columns(lookups) if c.name != "merchant_id"]
    return (select(*columns).where(t.c.merchant_id == merchant_id, t.c.transaction_time >= lo,
                                   t.c.transaction_time < hi), [c.name for c in columns])


def _window_refunds(lookups: _Lookups, merchant_id: str, lo: Any, hi: Any) -> pd.DataFrame:
    t, r = ovo_payments, ovo_refunds
    columns = _refund_columns(lookups)
    # The refunds table has no merchant column: a refund belongs to its payment's merchant.
    merchants_payments = select(t.c.partner_reference_no).where(t.c.merchant_id == merchant_id)
    return lookups.fetch(select(*columns).where(
        r.c.refund_time >= lo, r.c.refund_time < hi,
        r.c.original_partner_reference_no.in_(merchants_payments)), [c.name for c in columns])


def _window_ledger(lookups: _Lookups, merchant_id: str, settlement_date: dt.date,
                   lo: Any, hi: Any, payments: int) -> pd.DataFrame:
    """The ledger entries of the merchant's other dates whose settle key is one of the
    keys of its `payments` payments from `lo` to `hi` (the window's), joined in the
    database."""
    t = ovo_payments
    keys = select(t.c.partner_reference_no).where(
        t.c.merchant_id == merchant_id, t.c.transaction_time >= lo, t.c.transaction_time < hi)
    with lookups.probing_ledger(payments):
        return lookups.fetch(select(*_LEDGER_COLUMNS).where(
            *_of_other_dates(merchant_id, settlement_date), recon_ledger.c.settle_key.in_(keys)),
            _LEDGER_NAMES)


def load_run_inputs(
    engine: Engine,
    merchant_id: str,
    settlement_date: dt.date,
    covered: Sequence[dt.date],
    rows: pd.DataFrame,
    window: WindowLoad | None = None,
) -> RunInputs:
    """Records for the covered window, plus those the file and the open items refer to.

    `window` is the window's load when it was started before the file was read. The keys
    the file names go into temporary tables once and every lookup is a join against
    them. On PostgreSQL this runs through ADBC: keys in by COPY, rows out as Arrow.
    """
    if window is None:
        window = WindowLoad(engine, merchant_id, settlement_date, covered, alone=True)
    elif window.key != (merchant_id, settlement_date, tuple(covered)):
        raise ValueError(f"the window loaded is {window.key}, not {merchant_id} "
                         f"{settlement_date} {covered}")
    try:
        with _load_connection(engine) as (conn, lookups):
            open_items = _load_open_items(conn, merchant_id, settlement_date)
            payments, refunds, ledger = _load_records(
                lookups, window, merchant_id, settlement_date, rows, open_items)
    except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
        raise database_error(engine, exc) from exc
    return RunInputs(payments, refunds, ledger, open_items)


class _WindowSource(Protocol):
    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]: ...

    def ledger(self) -> pd.DataFrame: ...


@dataclass(frozen=True)
class _GivenWindow:
    """A window loaded already (a part's, in a run in parts)."""

    window: Window

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self.window.payments, self.window.refunds

    def ledger(self) -> pd.DataFrame:
        return self.window.ledger


@contextlib.contextmanager
def _load_connection(engine: Engine) -> Iterator[tuple[Any, _Lookups]]:
    """A load's connection and its lookups: through ADBC on PostgreSQL (a connection of
    their own), on the connection elsewhere."""
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(engine.connect())
        lookups: _Lookups
        if engine.dialect.name == "postgresql":
            lookups = stack.enter_context(_ArrowLookups(engine, key_lookups=True))
        else:
            lookups = stack.enter_context(_SqlLookups(conn))
        yield conn, lookups


def _load_records(lookups: _Lookups, window: _WindowSource, merchant_id: str,
                  settlement_date: dt.date, rows: pd.DataFrame,
                  open_items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """What does not depend on the window is looked up while it loads: the refund keys go
    in, then the refunds they name and the ledger entries they settle. The window tells
    which of the file's invoices are not among its payments: those are the invoices whose
    ledger entries are looked up here (the window's payments' entries come with the
    window, and are waited for last).

    At 1M rows with a day of other entries in the ledger, the refund keys' entries (40,000
    keys, probed) took 0.3 s after the window's payments, and now go on beside them."""
    refund_rows = rows.loc[rows["transaction_type"] == cat.REFUND,  # the columns read
                           ["merchant_invoice", "refund_invoice", "ovo_reference_no"]]
    # The invoices as they are: a million keys, of which a handful repeat, where a set
    # of them would take a hash of every key (a key table may hold one twice).
    file_keys = {"inv": _named(text_array(rows["merchant_invoice"])),
                 "rinv": _distinct(refund_rows["refund_invoice"]),
                 "rno": _distinct(refund_rows["ovo_reference_no"])}
    named = pa.concat_arrays(list(file_keys.values()))
    lookups.add_keys({"rinv": file_keys["rinv"], "rno": file_keys["rno"],
                      "oref": _distinct(
                          open_items.loc[open_items["kind"] == cat.REFUND, "record_key"])})
    named_refunds = _named_refunds(lookups)
    # The refund keys' own entries while the window loads: they need nothing of it.
    refund_rows_ledger = _named_ledger(lookups, merchant_id, settlement_date, ["rinv", "rno"],
                                       len(file_keys["rinv"]) + len(file_keys["rno"]))
    window_payments, window_refunds = window.records()
    # Which invoices are the window's payments: joined here while the refunds are queried.
    window_keys = text_array(window_payments["partner_reference_no"])  # primary keys
    with ThreadPoolExecutor(1, thread_name_prefix="recon-seen") as pool:
        seeing = pool.submit(lambda: found_both_ways(window_keys, file_keys["inv"])[1])
        refunded = _refunded_payments(refund_rows, window_refunds, file_keys["inv"])
        # Their refunds are loaded, and their earlier refund entries (`_load_ledger`).
        lookups.add_keys({"rorig": refunded})
        refunds = _load_refunds(lookups, window_refunds, named_refunds)
        seen = seeing.result()
    open_payments = _distinct(open_items.loc[open_items["kind"] == cat.PAYMENT, "record_key"])
    payments, outside, unnamed = _load_payments(lookups, window_payments, window_keys, seen,
                                                file_keys, named, open_payments)
    del window_payments
    # The file's invoices the window's payments are not: their entries by settle key.
    lookups.add_keys({"file": outside})
    by_settle_key = [refund_rows_ledger,
                     _named_ledger(lookups, merchant_id, settlement_date, ["file"], len(outside))]
    refund_keys = text_array(refunds["partner_refund_no"])  # distinct already
    lookups.add_keys({"rec_only": pa.concat_arrays([
        unnamed, refund_keys.filter(pa.array(~found_in(refund_keys, named)))]),
        "rkey": refund_keys})
    ledger = _load_ledger(lookups, merchant_id, settlement_date, window.ledger,
                          by_settle_key, refunded, refund_keys)
    return payments, refunds, ledger


def _time_column(lookups: _Lookups, column: Any, label: str) -> Any:
    """A time column: typed on PostgreSQL, as stored (text or datetime) elsewhere."""
    if lookups.dialect.name == "postgresql":
        return column.label(label)
    return type_coerce(column, String).label(label)


_PAYMENT_COLUMNS = [ovo_payments.c.partner_reference_no, ovo_payments.c.reference_no,
                    ovo_payments.c.merchant_id, ovo_payments.c.store_id,
                    _minor(ovo_payments.c.amount).label("amount"), ovo_payments.c.pay_option,
                    ovo_payments.c.status]


def _payment_columns(lookups: _Lookups) -> list[Any]:
    return [*_PAYMENT_COLUMNS, _time_column(lookups, ovo_payments.c.transaction_time,
                                            "transaction_time")]


def _payment_frame(raw: pd.DataFrame, merchant_id: str | None = None) -> pd.DataFrame:
    """Payments as the database gave them -> the PAYMENTS column types (the window's in
    the thread that loads them). `merchant_id` fills the merchant of the window's
    payments, which their query does not fetch."""
    frame = raw.copy(deep=False)  # copy-on-write: the columns replaced are new ones
    # A few values each over millions of rows: categoricals (at 10M rows 0.4 GB less).
    if merchant_id is not None:
        frame["merchant_id"] = pd.Series(pd.Categorical.from_codes(
            np.zeros(len(frame), dtype=np.int8), pd.Index([merchant_id], dtype="str")),
            index=frame.index)
    if frame.empty:
        return frame
    frame["amount"] = frame["amount"].astype("Int64")
    frame["transaction_time"] = to_utc(frame["transaction_time"])
    frame["transaction_date"] = wib_dates(frame["transaction_time"])
    if merchant_id is None:
        frame["merchant_id"] = label_column(frame["merchant_id"])
    frame["store_id"] = label_column(frame["store_id"])
    frame["status"] = label_column(frame["status"], lambda value: str(value).strip())
    frame["pay_option"] = label_column(frame["pay_option"],
                                       lambda value: str(value).strip().upper())
    return frame


def _load_payments(lookups: _Lookups, window: pd.DataFrame, window_keys: pa.Array,
                   seen: np.ndarray, file_keys: dict[str, pa.Array], named: pa.Array,
                   open_payments: pa.Array) -> tuple[pd.DataFrame, pa.Array, pa.Array]:
    """The window's payments, plus those the file or the open items name elsewhere; the
    file's invoices that are no key of the window's payments; and the keys of the
    payments found elsewhere that no key of the file (`named`: all of them) names.

    `seen`: which of the file's invoices are keys of the window's payments (`window_keys`),
    one lookup of a million among a million: the others are looked for elsewhere. The
    window's payments need no such list: their ledger entries came with the window
    (`_window_ledger`)."""
    columns = _payment_columns(lookups)
    invoices = file_keys["inv"]
    lookups.add_keys({"pay": pa.concat_arrays([
        invoices.filter(pa.array(~seen)),
        open_payments.filter(pa.array(~found_in(open_payments, window_keys)))])})
    extra = lookups.fetch(_keyed(columns, ovo_payments.c.partner_reference_no, ["pay"]),
                          [c.name for c in columns])
    if not extra.empty:  # a key the database compares without case may find a window row
        keys = text_array(extra["partner_reference_no"])
        again = window_keys.filter(pc.is_in(window_keys, value_set=keys))
        extra = extra.loc[~np.asarray(pc.is_in(keys, value_set=again))].drop_duplicates(
            "partner_reference_no")
    extra_keys = text_array(extra["partner_reference_no"])
    unnamed = extra_keys.filter(pa.array(~found_in(extra_keys, named)))
    outside = invoices.filter(pa.array(~seen))
    frames = [frame for frame in (window, _payment_frame(extra)) if not frame.empty]
    if not frames:
        return empty_frame(PAYMENTS), outside, unnamed
    frame = frames[0] if len(frames) == 1 else concat_labelled(frames, PAYMENT_LABELS)
    return conform(frame, PAYMENTS, "payments"), outside, unnamed


def _refund_columns(lookups: _Lookups) -> list[Any]:
    t = ovo_refunds
    return [t.c.partner_refund_no, t.c.original_partner_reference_no, t.c.refund_no,
            _minor(t.c.refund_amount).label("refund_amount"),
            _time_column(lookups, t.c.refund_time, "refund_time"), t.c.status]


def _refunded_payments(refund_rows: pd.DataFrame, window: pd.DataFrame,
                       invoices: pa.Array) -> pa.Array:
    """The file's payments whose every refund the run needs, and every earlier refund
    entry: those its refund rows name (matching by payment and amount, refunds settled per
    payment) and those with a refund in the window (refund deltas). Not every payment of
    the file: a million keys, where the refunds of the others are never read."""
    in_window = _distinct(window["original_partner_reference_no"]).cast(invoices.type)
    return pc.unique(pa.concat_arrays([
        _distinct(refund_rows["merchant_invoice"]).cast(invoices.type),
        invoices.filter(pc.is_in(invoices, value_set=in_window))]))


def _refunds_of(lookups: _Lookups, column: Any, *tags: str) -> pd.DataFrame:
    """The refunds whose `column` is one of the loaded keys with one of `tags`."""
    columns = _refund_columns(lookups)
    return lookups.fetch(_keyed(columns, column, tags), [c.name for c in columns])


def _named_refunds(lookups: _Lookups) -> list[pd.DataFrame]:
    """The refunds of the file's refund numbers and of the open items (those the window
    holds too are dropped in `_load_refunds`)."""
    t = ovo_refunds
    return [_refunds_of(lookups, t.c.partner_refund_no, "rinv", "oref"),
            _refunds_of(lookups, t.c.refund_no, "rno")]


def _load_refunds(lookups: _Lookups, window: pd.DataFrame,
                  named: list[pd.DataFrame]) -> pd.DataFrame:
    """The window's refunds, plus those elsewhere of the payments in the "rorig" key
    table (`_refunded_payments`), and the `named` ones (`_named_refunds`)."""
    by_payment = _refunds_of(lookups, ovo_refunds.c.original_partner_reference_no, "rorig")
    frame = pd.concat([window, by_payment, *named],
                      ignore_index=True).drop_duplicates("partner_refund_no")
    if frame.empty:
        return empty_frame(REFUNDS)
    frame["refund_amount"] = frame["refund_amount"].astype("Int64")
    frame["refund_time"] = to_utc(frame["refund_time"])
    frame["refund_date"] = wib_dates(frame["refund_time"])
    frame["status"] = frame["status"].fillna("").astype("str").str.strip()
    return conform(frame, REFUNDS, "refunds")


_LEDGER_COLUMNS = [*(recon_ledger.c[name] for name in (
    "settlement_date", "kind", "settle_key", "record_key", "original_reference_no")),
    _minor(recon_ledger.c.amount).label("amount"), recon_ledger.c.line_no]


_LEDGER_NAMES = [c.name for c in _LEDGER_COLUMNS]


def _of_other_dates(merchant_id: str, settlement_date: dt.date) -> tuple[Any, Any]:
    """Where a ledger entry is the merchant's, of a date other than `settlement_date`."""
    t = recon_ledger
    return t.c.merchant_id == merchant_id, t.c.settlement_date != settlement_date


def _ledger_of(lookups: _Lookups, merchant_id: str, settlement_date: dt.date,
               column: Any, tags: Sequence[str], *conditions: Any) -> pd.DataFrame:
    """The ledger entries of the merchant's other dates whose `column` is one of the keys
    with one of `tags` and that meet `conditions`."""
    return lookups.fetch(_keyed(_LEDGER_COLUMNS, column, tags,
                                *_of_other_dates(merchant_id, settlement_date), *conditions),
                         _LEDGER_NAMES)


def _named_ledger(lookups: _Lookups, merchant_id: str, settlement_date: dt.date,
                  tags: Sequence[str], keys: int) -> pd.DataFrame:
    """The entries whose settle key is one of the `keys` keys of the key tables `tags`
    (the file's keys that are no window payment's: duplicates of this file's rows)."""
    with lookups.probing_ledger(keys):
        return _ledger_of(lookups, merchant_id, settlement_date, recon_ledger.c.settle_key,
                          tags)


def _load_ledger(lookups: _Lookups, merchant_id: str, settlement_date: dt.date,
                 window_ledger: Callable[[], pd.DataFrame], by_settle_key: list[pd.DataFrame],
                 refunded: pa.Array, refund_keys: pa.Array) -> pd.DataFrame:
    """The entries found by settle key (the window's payments', asked of `window_ledger`
    once the others are found, and `_named_ledger`'s), plus those of the other records the
    file does not name, and the refund entries the match reads through a refund or a
    payment.

    An entry's record key differs from its settle key only for a refund row's entry (a
    payment row's record is its invoice, or none), and its original payment only for a
    refund row's too. The match reads such an entry through its record, a refund
    (`refund_keys`, the refunds loaded: duplicates of a refund record, records settled),
    or through its original payment when that payment's refunds are added up
    (`refunded`: the payments a refund row of the file names, or with a refund in the
    window). Looked up among the file's million keys instead, they found the same
    entries and others no check reads, and took 0.45-0.58 s (by original payment) and
    0.27-0.43 s (by record) where these take 0.05-0.10 s each (1M rows, with an earlier
    day of 1M entries in the ledger)."""
    t = recon_ledger

    def differing(column: Any, tag: str, keys: pa.Array) -> pd.DataFrame:
        """The entries whose `column`, not their settle key, is one of `keys` (the key
        table `tag`), exactly: a database that compares without case finds others too."""
        found = _ledger_of(lookups, merchant_id, settlement_date, column, [tag],
                           column != t.c.settle_key)
        return found.loc[positions_in(text_array(found[column.name]), keys)[0]]

    found = [
        *by_settle_key,
        _ledger_of(lookups, merchant_id, settlement_date, t.c.settle_key, ["rec_only"],
                   t.c.record_key == t.c.settle_key),
        differing(t.c.record_key, "rkey", refund_keys),
        differing(t.c.original_reference_no, "rorig", refunded)]
    return _ledger_frame([window_ledger(), *found])


def _ledger_frame(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Ledger entries as the database gave them, each once, of the LEDGER types."""
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(
        ["settlement_date", "line_no"])  # an entry: a date's line (its one run's)
    if frame.empty:
        return empty_frame(LEDGER)
    frame["settlement_date"] = _dates(frame["settlement_date"])
    frame["amount"] = frame["amount"].astype("Int64")
    frame["line_no"] = frame["line_no"].astype("Int64").astype("int64")
    return conform(frame, LEDGER, "ledger")


@dataclass(frozen=True)
class Ties:
    """What a run in parts loads before its parts (`load_ties`): the payment groups, and
    the small things they come from, loaded whole."""

    refund_rows: pd.DataFrame  # the file's refund rows (REFUND_ROW_COLUMNS)
    refunds: pd.DataFrame  # every refund a part's load can find (REFUNDS), and more
    ledger: pd.DataFrame  # every entry that can tie two payments (LEDGER), and more
    window_refunds: pd.DataFrame  # the window's refunds, as the database gives them
    window_ledger: pd.DataFrame  # the window's payments' entries of other dates, as given
    open_items: pd.DataFrame  # OPEN_ITEMS
    groups: dict[str, str]  # payment_groups of the above


def load_ties(engine: Engine, merchant_id: str, settlement_date: dt.date,
              covered: Sequence[dt.date], refund_rows: pd.DataFrame) -> Ties:
    """The payment groups of a run in parts, before its parts are loaded, from the file's
    refund rows and what can tie two payments (`payment_groups`): every refund a part's
    load can find (the window's, those the refund rows and the open items name, and those
    of the payments the refund rows name or the window's refunds are of), every ledger
    entry of other dates whose settle key is a refund row's key or whose record is one of
    those refunds, and every payment entry of other dates whose settle key or record is
    not its payment's (none the matcher writes). More than the whole run loads, so the
    groups are those of the whole run or coarser: a part still holds whole groups. Also
    the window's refunds, the window's payments' ledger entries and the open items, which
    the parts take by the part of their payment."""
    start, end = _window(covered)
    lo, hi = ((start, end) if engine.dialect.name == "postgresql"
              else (start.replace(tzinfo=None), end.replace(tzinfo=None)))
    refund_rows = refund_rows.loc[refund_rows["transaction_type"] == cat.REFUND]
    try:
        with _load_connection(engine) as (conn, lookups):
            open_items = _load_open_items(conn, merchant_id, settlement_date)
            t = ovo_payments
            payments = int(conn.execute(select(func.count()).select_from(t).where(
                t.c.merchant_id == merchant_id, t.c.transaction_time >= lo,
                t.c.transaction_time < hi)).scalar_one())
            window_refunds, window_ledger = _window_queries(
                lookups, merchant_id, settlement_date, lo, hi, payments)
            refund_numbers = _distinct(refund_rows["refund_invoice"])
            references = _distinct(refund_rows["ovo_reference_no"])
            lookups.add_keys({"rinv": refund_numbers, "rno": references, "oref": _distinct(
                open_items.loc[open_items["kind"] == cat.REFUND, "record_key"])})
            named = _named_refunds(lookups)
            lookups.add_keys({"rorig": pc.unique(pa.concat_arrays([
                _distinct(refund_rows["merchant_invoice"]),
                _distinct(window_refunds["original_partner_reference_no"])]))})
            refunds = _load_refunds(lookups, window_refunds, named)
            lookups.add_keys({"file": pc.unique(pa.concat_arrays([refund_numbers, references])),
                              "rkey": text_array(refunds["partner_refund_no"])})
            r = recon_ledger
            ledger = _ledger_frame([
                window_ledger,
                _ledger_of(lookups, merchant_id, settlement_date, r.c.settle_key, ["file"]),
                _ledger_of(lookups, merchant_id, settlement_date, r.c.record_key, ["rkey"]),
                lookups.fetch(select(*_LEDGER_COLUMNS).where(
                    *_of_other_dates(merchant_id, settlement_date), r.c.kind == cat.PAYMENT,
                    or_(r.c.original_reference_no != r.c.settle_key,
                        r.c.record_key != r.c.settle_key)), _LEDGER_NAMES)])
    except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
        raise database_error(engine, exc) from exc
    return Ties(refund_rows=refund_rows, refunds=refunds, ledger=ledger,
                window_refunds=window_refunds, window_ledger=window_ledger,
                open_items=open_items,
                groups=payment_groups(refund_rows, refunds, ledger))


def load_part_records(engine: Engine, merchant_id: str, settlement_date: dt.date,
                      rows: pd.DataFrame, window: Window, open_items: pd.DataFrame
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A part's payments, refunds and ledger entries, as `load_run_inputs` loads a file's:
    `rows` are the part's, `window` its window (its payments, and its share of the
    window's refunds and ledger entries), `open_items` its open items. Each lookup is
    keyed by the part's keys on a connection of its own."""
    try:
        with _load_connection(engine) as (_, lookups):
            return _load_records(lookups, _GivenWindow(window), merchant_id, settlement_date,
                                 rows, open_items)
    except (SQLAlchemyError, adbc_driver_manager.Error) as exc:
        raise database_error(engine, exc) from exc


def _load_open_items(conn: Any, merchant_id: str, settlement_date: dt.date) -> pd.DataFrame:
    """MISSING_IN_SETTLEMENT items of earlier dates that were open just before this date."""
    t = recon_exceptions
    columns = [t.c.exception_id, t.c.settlement_date.label("opened_date"), t.c.kind,
               t.c.record_key, _minor(t.c.record_amount).label("amount"), t.c.record_date]
    query = select(*columns).where(
        t.c.merchant_id == merchant_id,
        t.c.category == cat.MISSING_IN_SETTLEMENT,
        t.c.settlement_date < settlement_date,
        or_(t.c.state == "open", t.c.closed_by_date >= settlement_date),
    )
    frame = _as_frame(list(conn.execute(query)), [c.name for c in columns])
    if frame.empty:
        return empty_frame(OPEN_ITEMS)
    return conform(frame, OPEN_ITEMS, "open items")


# ------------------------------------------------------------------------------ persisting


@dataclass(frozen=True)
class RunRecord:
    merchant_id: str
    settlement_date: dt.date
    started_at: dt.datetime
    file_name: str
    file_sha256: str
    file_rows: int
    archive_path: str
    exceptions: int
    summary: dict[str, Any]


@dataclass(frozen=True)
class PersistedRun:
    run_id: int
    attempt: int
    rerun: bool
    finished_at: dt.datetime


def _iso_date_text(values: pd.Series) -> pa.Array:
    """Dates (date objects, None for none) -> ISO text, each distinct date once."""
    codes, distinct = pd.factorize(values.to_numpy(dtype=object))
    texts = pa.array([d.isoformat() for d in distinct] + [None], pa.large_string())
    return texts.take(pa.array(np.where(codes < 0, len(distinct), codes)))


def _none_if_empty(texts: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(texts, ""), _text(None), texts)


def _text(value: str | None) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


def _filled(size: int, value: str | None) -> pa.Array:
    return pa.repeat(_text(value), size)


#: The exceptions table's columns as a run writes them: money as exact text, dates as
#: ISO text.
_EXCEPTION_COLUMNS = pa.schema(
    [(c.name, pa.int64() if c.name in {"run_id", "line_no"} else pa.large_string())
     for c in recon_exceptions.c if c.name not in {"exception_id", "closed_by_line"}])


def _exception_tables(result: ReconResult, merchant_id: str, day: dt.date, run_id: int,
                      batch_rows: int = 100_000) -> Iterator[pa.Table]:
    """Every exception of the run, `batch_rows` at a time, as database-ready columns: the
    flagged settlement rows (in file order; a run in parts's, a category at a time), then
    the MISSING_IN_SETTLEMENT records. Made column by column
    in Arrow a batch at a time: a bad day flags every row of the file, and a Python object
    per cell took 2.6 s and 0.5 GB for a million of them."""
    def batches() -> Iterator[tuple[Callable[[pd.DataFrame], dict[str, pa.Array]],
                                    pd.DataFrame]]:
        if result.flagged is not None:  # on disk: a category at a time, each in file order
            for name in cat.ROW_CATEGORIES:
                for frame in result.flagged.batches(name, batch_rows):
                    yield _flagged_columns, frame
        else:
            flagged = np.flatnonzero(
                (result.rows["category"] != cat.MATCHED).to_numpy(dtype=bool))
            for start in range(0, len(flagged), batch_rows):
                yield _flagged_columns, result.rows.take(flagged[start:start + batch_rows])
        for start in range(0, len(result.missing), batch_rows):
            yield _missing_columns, result.missing.iloc[start:start + batch_rows]

    for columns_of, frame in batches():
        columns = {"merchant_id": _filled(len(frame), merchant_id),
                   "settlement_date": _filled(len(frame), day.isoformat()),
                   "run_id": pa.array(np.full(len(frame), run_id, dtype=np.int64)),
                   **columns_of(frame)}
        yield pa.table(columns).cast(_EXCEPTION_COLUMNS)


def _flagged_columns(rows: pd.DataFrame) -> dict[str, pa.Array]:
    nothing = _filled(len(rows), None)
    kind = text_array(rows["transaction_type"])
    return {
        "category": text_array(rows["category"]),
        "kind": pc.if_else(pc.equal(kind, ""), _text("?"), kind),
        "line_no": pa.array(rows["line_no"].to_numpy(dtype=np.int64)),
        "merchant_invoice": text_array(rows["merchant_invoice"]),
        "refund_invoice": text_array(rows["refund_invoice"]),
        "ovo_reference_no": text_array(rows["ovo_reference_no"]),
        "record_key": _none_if_empty(text_array(rows["record_key"])),
        "record_date": _iso_date_text(rows["record_date"]),
        "file_amount": minor_text(rows["gross"]),
        "record_amount": minor_text(rows["record_amount"]),
        "delta": minor_text(rows["delta"]),
        "reason": text_array(rows["reason"]),
        "flags": _none_if_empty(text_array(rows["flags"])),
        "state": nothing,
        "closed_by_date": nothing,
    }


def _missing_columns(m: pd.DataFrame) -> dict[str, pa.Array]:
    nothing = _filled(len(m), None)
    kinds = text_array(m["kind"])
    dates = _iso_date_text(m["record_date"])
    closed = _iso_date_text(m["closed_by_date"])
    return {
        "category": _filled(len(m), cat.MISSING_IN_SETTLEMENT),
        "kind": kinds,
        "line_no": pa.nulls(len(m), pa.int64()),
        "merchant_invoice": text_array(m["original_reference_no"]),
        "refund_invoice": pc.if_else(pc.equal(kinds, cat.REFUND), text_array(m["record_key"]),
                                     _text(None)),
        "ovo_reference_no": text_array(m["reference_no"]),
        "record_key": text_array(m["record_key"]),
        "record_date": dates,
        "file_amount": nothing,
        "record_amount": minor_text(m["signed_amount"]),
        "delta": nothing,
        "reason": pc.binary_join_element_wise(
            pc.utf8_lower(kinds), _text(" of "), pc.fill_null(dates, "None"),
            _text(" not in the settlement file"), _text("")),
        "flags": nothing,
        "state": pc.if_else(pc.is_valid(closed), "closed", "open"),
        "closed_by_date": closed,
    }


def persist_run(engine: Engine, result: ReconResult, run: RunRecord) -> PersistedRun:
    """Replace what earlier runs of this date wrote, in one transaction; keep run history."""
    return RunWriter(engine).finish(result, run)


class RunWriter:
    """One run's results into the database in one transaction: earlier runs of the date
    replaced, run history kept. Nothing is visible to others until `finish` commits.

    `write_ledger` begins that transaction as soon as the match knows the ledger, in a
    thread of its own: the database takes a million ledger rows while the rest of the
    match, the summary and the workbook are computed. On SQLite, whose one writer would
    hold off every reader for that long, the ledger waits for `finish`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self._begun: Future[tuple[int, int]] | None = None  # run id and attempt
        self._stop = threading.Event()  # set when the run fails: the COPY ends between batches
        self._parts: _LedgerParts | None = None  # the ledger written a part at a time
        self.ledger_seconds: float | None = None  # the ledger written alongside, how long
        self.ledger_kept: int | None = None  # a re-run's entries left as the run before wrote them

    def write_ledger(self, ledger: Ledger, run: RunRecord) -> None:
        """Begin the run's transaction and write `ledger`, while the caller goes on."""
        if self._begun is not None or self._parts is not None:
            raise RuntimeError("the run's ledger is being written already")
        if self._engine.dialect.name == "sqlite":
            return
        self._begun = Future()
        threading.Thread(target=_settle_future, args=(self._begun, partial(
            self._timed_begin, ledger, run)), name="recon-ledger", daemon=True).start()

    def _timed_begin(self, ledger: Ledger, run: RunRecord) -> tuple[int, int]:
        started = time.perf_counter()
        begun = self._begin(ledger, run)
        self.ledger_seconds = time.perf_counter() - started
        return begun

    @property
    def parted_entries(self) -> int | None:
        """The entries written a part at a time, None for a ledger written whole."""
        return None if self._parts is None else self._parts.entries

    def write_ledger_part(self, ledger: Ledger, run: RunRecord) -> None:
        """Write one part of the run's ledger, in the caller's thread: a run matched a part
        at a time calls this for each part, then `finish` with a result whose ledger has no
        entries (`reported_of_parts`). No part's entries are held here after the call.

        On PostgreSQL and MariaDB the run's transaction begins with the first part and
        each part goes in as it comes (binary COPY on PostgreSQL; a re-run there stages
        the parts and keeps, at `finish`, the entries it would write again, as a whole
        re-run does). On SQLite the parts go to a temporary table of the run's connection,
        outside the database's file (the run's write there would hold off the loads of the
        next parts), and from it into the ledger at `finish`."""
        if self._begun is not None:
            raise RuntimeError("the run's ledger is being written whole")
        if self._parts is not None and self._conn is None:
            raise RuntimeError("the run's writer is closed")
        try:
            if self._parts is None:
                self._parts = self._begin_parts(run)
            self._parts.write(self._conn, ledger, run)
        except BaseException as exc:
            self._close()  # the transaction is lost: its locks go with it, now
            if isinstance(exc, SQLAlchemyError):
                raise database_error(self._engine, exc) from exc
            raise

    def _begin_parts(self, run: RunRecord) -> _LedgerParts:
        if self._engine.dialect.name == "sqlite":
            self._conn = conn = self._engine.connect()
            # A failed run's table lives on with its connection, which the pool keeps.
            conn.execute(text(f"DROP TABLE IF EXISTS temp.{LEDGER_STAGING.name}"))
            LEDGER_STAGING.create(conn)
            return _LedgerParts(table=LEDGER_STAGING, run_id=0, attempt=0, staged=True)
        run_id, attempt = self._begin_run(run)
        rerun = attempt > 1 and self._engine.dialect.name == "postgresql"
        if rerun:
            LEDGER_STAGING.create(self._conn)
        else:
            _delete_ledger(self._conn, run.merchant_id, run.settlement_date)
        return _LedgerParts(table=LEDGER_STAGING if rerun else recon_ledger, run_id=run_id,
                            attempt=attempt, staged=rerun)

    def _finish_parts(self, parts: _LedgerParts, run: RunRecord) -> tuple[int, int]:
        """The parts' ledger in place, once every part is written: the run id and attempt."""
        conn, merchant, day = self._conn, run.merchant_id, run.settlement_date
        if conn.dialect.name == "sqlite":
            run_id, attempt = self._begin_run(run)
            _delete_ledger(conn, merchant, day)
            columns = ", ".join(name for name in _LEDGER_COPY_COLUMNS if name != "run_id")
            conn.execute(text(
                f"INSERT INTO {recon_ledger.name} (run_id, {columns}) "
                f"SELECT :run_id, {columns} FROM temp.{parts.table.name} ORDER BY settle_key"),
                {"run_id": run_id})
            conn.execute(text(f"DROP TABLE temp.{parts.table.name}"))
            return run_id, attempt
        if parts.staged:
            self.ledger_kept = _apply_staged(conn, merchant, day, parts.entries)
        return parts.run_id, parts.attempt

    def _begin(self, ledger: Ledger, run: RunRecord) -> tuple[int, int]:
        run_id, attempt = self._begin_run(run)
        self.ledger_kept = _write_ledger(self._conn, ledger, run.merchant_id,
                                         run.settlement_date, run_id, rerun=attempt > 1,
                                         stop=self._stop.is_set)
        return run_id, attempt

    def _begin_run(self, run: RunRecord) -> tuple[int, int]:
        """The run's transaction begun (on the writer's connection, made here if there is
        none): its run row, the date's exceptions deleted and the items it closed reopened."""
        day, merchant, runs = run.settlement_date, run.merchant_id, recon_runs
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        if not conn.in_transaction():
            conn.begin()
        attempt = conn.execute(select(func.count()).select_from(runs).where(
            runs.c.merchant_id == merchant, runs.c.settlement_date == day)).scalar_one() + 1
        conn.execute(update(runs).where(runs.c.merchant_id == merchant,
                                        runs.c.settlement_date == day).values(is_current=False))
        # The results' columns are written by `finish`, in the same transaction.
        run_id = conn.execute(insert(runs).values(
            merchant_id=merchant, settlement_date=day, attempt=attempt, is_current=True,
            started_at=run.started_at, finished_at=run.started_at, file_name=run.file_name,
            file_sha256=run.file_sha256, file_rows=run.file_rows,
            archive_path=run.archive_path, exceptions=0, summary_json="{}",
        )).inserted_primary_key
        run_id = run_id[0] if run_id else None
        if run_id is None:
            raise StoreError("the database returned no id for the new run")
        exc_t = recon_exceptions
        conn.execute(delete(exc_t).where(exc_t.c.merchant_id == merchant,
                                         exc_t.c.settlement_date == day))
        conn.execute(update(exc_t).where(exc_t.c.merchant_id == merchant,
                                         exc_t.c.closed_by_date == day)
                     .values(state="open", closed_by_date=None, closed_by_line=None))
        return int(run_id), int(attempt)

    def finish(self, result: ReconResult, run: RunRecord) -> PersistedRun:
        """Write the rest of `result` and commit (beginning with the ledger if
        `write_ledger` did not)."""
        persisted = self.write(result, run)
        self.commit()
        return persisted

    def write(self, result: ReconResult, run: RunRecord) -> PersistedRun:
        """Write the rest of `result` in the run's transaction, without committing: the
        caller stages its reports, then `commit`s (or `abort`s, leaving the database as it
        was)."""
        day, merchant = run.settlement_date, run.merchant_id
        exc_t = recon_exceptions
        try:
            if self._parts is not None:
                run_id, attempt = self._finish_parts(self._parts, run)
            else:
                run_id, attempt = (self._begun.result() if self._begun is not None
                                   else self._begin(result.ledger, run))
            finished = dt.datetime.now(dt.UTC)
            conn = self._conn
            written = logged = 0
            for exceptions in _exception_tables(result, merchant, day, run_id,
                                                _WRITE_BATCH_ROWS):
                _bulk_insert(conn, exc_t, exceptions)
                written += exceptions.num_rows
                if written - logged >= _PROGRESS_ROWS and written < result.exceptions:
                    logged = written
                    log.info("%s: %s of %s rows written", exc_t.name, f"{written:,}",
                             f"{result.exceptions:,}")
            closures = [{"b_id": int(c.exception_id), "b_line": int(c.line_no)}
                        for c in result.closures.itertuples(index=False)]
            if closures:
                conn.execute(
                    update(exc_t).where(exc_t.c.exception_id == bindparam("b_id"))
                    .values(state="closed", closed_by_date=day,
                            closed_by_line=bindparam("b_line")),
                    closures,
                )
            conn.execute(update(recon_runs).where(recon_runs.c.run_id == run_id).values(
                finished_at=finished, exceptions=run.exceptions,
                summary_json=json.dumps(run.summary, sort_keys=True)))
        except BaseException as exc:
            self._close()
            if isinstance(exc, SQLAlchemyError):
                raise database_error(self._engine, exc) from exc
            raise
        entries = len(result.ledger) if self._parts is None else self._parts.entries
        log.info("wrote run %s (attempt %d): %d ledger entries, %d closures; not committed yet",
                 run_id, attempt, entries, len(result.closures))
        return PersistedRun(run_id=run_id, attempt=attempt, rerun=attempt > 1,
                            finished_at=finished)

    def commit(self) -> None:
        """Make what `write` wrote visible to others, in one commit."""
        if self._conn is None:
            raise RuntimeError("the run's writer has nothing to commit")
        try:
            try:
                self._conn.commit()
            finally:
                self._close()
        except SQLAlchemyError as exc:
            raise database_error(self._engine, exc) from exc

    def abort(self) -> None:
        """Roll back what was written (once the ledger's write has ended: on PostgreSQL at
        the end of the batch it is writing); a finished run is left as it is."""
        self._stop.set()
        if self._begun is not None:
            futures_wait([self._begun])
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # an open transaction is rolled back


@dataclass
class _LedgerParts:
    """Where a run's ledger written a part at a time goes, and how many entries went."""

    table: Table  # the ledger, or LEDGER_STAGING
    run_id: int
    attempt: int
    staged: bool  # a staging table, moved into the ledger at `finish`
    entries: int = 0

    def write(self, conn: Any, ledger: Ledger, run: RunRecord) -> None:
        merchant, day = run.merchant_id, run.settlement_date
        if conn.dialect.name == "postgresql":
            copy_ledger(conn, ledger, merchant, day, self.run_id, table=self.table.name)
        else:
            _bulk_insert(conn, self.table, _ledger_table(ledger, merchant, day, self.run_id))
        self.entries += len(ledger)


def _delete_ledger(conn: Any, merchant: str, day: dt.date) -> None:
    t = recon_ledger
    conn.execute(delete(t).where(t.c.merchant_id == merchant, t.c.settlement_date == day))


def _write_ledger(conn: Any, ledger: Ledger, merchant: str, day: dt.date, run_id: int,
                  rerun: bool, stop: Callable[[], bool]) -> int | None:
    """The date's ledger replaced by `ledger`, inside the run's transaction: the date's
    entries deleted and `ledger` written, by COPY on PostgreSQL and executemany elsewhere.
    A re-run on PostgreSQL instead keeps the entries it would write again
    (`_replace_ledger`) and returns how many it kept."""
    if conn.dialect.name == "postgresql" and rerun:
        return _replace_ledger(conn, ledger, merchant, day, run_id, stop)
    _delete_ledger(conn, merchant, day)
    if conn.dialect.name == "postgresql":
        copy_ledger(conn, ledger, merchant, day, run_id, stop)
    else:
        _bulk_insert(conn, recon_ledger, _ledger_table(ledger, merchant, day, run_id))
    return None


#: Rows turned into COPY bytes, CSV or driver tuples at a time.
_WRITE_BATCH_ROWS = 100_000
#: A long write of exceptions logs its progress every this many rows.
_PROGRESS_ROWS = 1_000_000


def _ledger_columns(ledger: Ledger) -> tuple[dict[str, pa.Array], pa.Array]:
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


def _ledger_table(ledger: Ledger, merchant: str, day: dt.date, run_id: int) -> pa.Table:
    """The ledger rows as database-ready text and numbers (money as exact text)."""
    unsorted, order = _ledger_columns(ledger)
    columns = {name: values.take(order) for name, values in unsorted.items()}
    count = len(order)
    return pa.table({
        "merchant_id": pa.repeat(merchant, count), "settlement_date": pa.repeat(
            day.isoformat(), count), "run_id": pa.repeat(int(run_id), count),
        **{name: columns[name] for name in ("kind", "settle_key", "record_key",
                                            "original_reference_no")},
        "amount": minor_text(columns["amount"]), "line_no": columns["line_no"],
    })


#: PostgreSQL's binary COPY: the signature, flags and header extension; the end marker.
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_PG_COPY_END = b"\xff\xff"
_LEDGER_COPY_COLUMNS = ("merchant_id", "settlement_date", "run_id", "kind", "settle_key",
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
    statement = (f"COPY {table} ({', '.join(_LEDGER_COPY_COLUMNS)}) "
                 "FROM STDIN WITH (FORMAT binary)")
    cursor = conn.connection.driver_connection.cursor()
    with cursor, cursor.copy(statement) as copy:
        copy.write(_PG_COPY_HEADER)
        columns, order = _ledger_columns(ledger)
        for start in range(0, len(order), _WRITE_BATCH_ROWS):
            if stop():
                raise LedgerAbandoned(f"{merchant} {day}: the run failed")
            batch = order[start:start + _WRITE_BATCH_ROWS]
            copy.write(_ledger_copy_rows({name: values.take(batch)
                                          for name, values in columns.items()},
                                         merchant, day, run_id))
        copy.write(_PG_COPY_END)


#: A re-run's ledger before it replaces the date's (`_replace_ledger`): the ledger's
#: columns, no index, dropped when the run's transaction ends.
LEDGER_STAGING = Table("recon_ledger_staged", MetaData(),
                       *(Column(c.name, c.type) for c in recon_ledger.c),
                       prefixes=["TEMPORARY"], postgresql_on_commit="DROP")

#: The memory each of `_replace_ledger`'s two joins may take in the server, for that
#: transaction only: a million entries' hash in one batch (at the default, 4 MB, in 16,
#: 0.3 s slower).
REPLACE_WORK_MEM = "128MB"


def _replace_ledger(conn: Any, ledger: Ledger, merchant: str, day: dt.date,
                    run_id: int, stop: Callable[[], bool]) -> int:
    """A re-run's ledger in place of the date's (PostgreSQL): an entry the earlier run
    wrote as it is now (same settle key, line, kind, record, original payment and amount)
    stays as it was, run id included; the others are deleted and the new ones written.
    Returns how many stayed.

    Deleting a million entries and writing them again took 6.6-10.6 s at 1M rows, where
    the date's first write takes 2.2-2.5 s: each new key goes into the primary key beside its
    deleted twin, which the deleting transaction cannot yet clear, and the index's pages
    split. A re-run of the same file and records now changes nothing in the ledger: the
    new entries go into an unindexed staging table by the same COPY, and two joins there
    find what differs."""
    LEDGER_STAGING.create(conn)
    copy_ledger(conn, ledger, merchant, day, run_id, stop, table=LEDGER_STAGING.name)
    if stop():
        raise LedgerAbandoned(f"{merchant} {day}: the run failed")
    return _apply_staged(conn, merchant, day, len(ledger))


def _apply_staged(conn: Any, merchant: str, day: dt.date, entries: int) -> int:
    """The date's ledger made what the staging table holds (`entries` of them): an entry
    the earlier run wrote as it is now stays, the others are deleted and the new ones
    written. Returns how many stayed."""
    staged = LEDGER_STAGING.name
    conn.exec_driver_sql(f"SET LOCAL work_mem = '{REPLACE_WORK_MEM}'")
    same = " AND ".join(f"s.{name} = l.{name}" for name in (
        "settle_key", "line_no", "kind", "record_key", "original_reference_no", "amount"))
    dated = "l.merchant_id = :merchant AND l.settlement_date = :day"
    values = {"merchant": merchant, "day": day}
    conn.execute(text(f"DELETE FROM {recon_ledger.name} l WHERE {dated} "
                      f"AND NOT EXISTS (SELECT 1 FROM {staged} s WHERE {same})"), values)
    # What is left of the date is what the staging holds as it is: the rest goes in.
    columns = ", ".join(_LEDGER_COPY_COLUMNS)
    added = conn.execute(text(
        f"INSERT INTO {recon_ledger.name} ({columns}) SELECT {columns} FROM {staged} s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {recon_ledger.name} l WHERE {dated} "
        "AND l.settle_key = s.settle_key AND l.line_no = s.line_no) ORDER BY s.settle_key"),
        values).rowcount
    return entries - added


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
    start["fields"], start["merchant_len"] = len(_LEDGER_COPY_COLUMNS), len(name)
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



def _bulk_insert(conn: Any, table: Any, rows: pd.DataFrame | pa.Table) -> None:
    """Write `rows` (columns named as the table's) inside the connection's transaction:
    COPY on PostgreSQL, driver-level executemany elsewhere; never row by row. Either way a
    batch at a time, so the rows are never all text or Python objects at once."""
    data = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(
        rows, preserve_index=False)
    if not data.num_rows:
        return
    names = data.column_names
    batches = data.to_batches(max_chunksize=_WRITE_BATCH_ROWS)
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.driver_connection.cursor()
        statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv)"
        with cursor, cursor.copy(statement) as copy:
            for batch in batches:
                text = pa.BufferOutputStream()
                pacsv.write_csv(batch, text, pacsv.WriteOptions(include_header=False))
                copy.write(memoryview(text.getvalue()))
        return
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    statement = (f"INSERT INTO {table.name} ({', '.join(names)}) "
                 f"VALUES ({', '.join([marker] * len(names))})")
    written = 0
    for batch in batches:
        conn.exec_driver_sql(statement, list(zip(*(c.to_pylist() for c in batch.columns),
                                                 strict=True)))
        written += batch.num_rows
        if written < data.num_rows:
            log.info("%s: %d of %d rows written", table.name, written, data.num_rows)


def next_attempt(engine: Engine, merchant_id: str, day: dt.date) -> int:
    """The attempt number the next run of (merchant, day) gets (under its run lock)."""
    t = recon_runs
    try:
        with engine.connect() as conn:
            done = conn.execute(select(func.count()).select_from(t).where(
                t.c.merchant_id == merchant_id, t.c.settlement_date == day)).scalar_one()
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return int(done) + 1


def with_current_run(history: pd.DataFrame, day: dt.date, exceptions: int,
                     file_rows: int, limit: int = 30) -> pd.DataFrame:
    """`history` as it will be once this run of `day` is persisted."""
    current = pd.DataFrame({"settlement_date": [day], "exceptions": [exceptions],
                            "file_rows": [file_rows], "attempt": [0]})
    earlier = history.loc[history["settlement_date"] != day]
    frames = [f for f in (earlier, current) if not f.empty]
    combined = pd.concat(frames, ignore_index=True).sort_values("settlement_date")
    return combined.tail(limit).reset_index(drop=True)


def run_history(engine: Engine, merchant_id: str, limit: int = 30) -> pd.DataFrame:
    """The latest current run per settlement date, newest last (for trend charts)."""
    t = recon_runs
    query = (select(t.c.settlement_date, t.c.exceptions, t.c.file_rows, t.c.attempt)
             .where(t.c.merchant_id == merchant_id, t.c.is_current.is_(True))
             .order_by(t.c.settlement_date.desc()).limit(limit))
    try:
        with engine.connect() as conn:
            frame = _as_frame(list(conn.execute(query)),
                              ["settlement_date", "exceptions", "file_rows", "attempt"])
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return frame.iloc[::-1].reset_index(drop=True)
