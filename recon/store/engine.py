"""Engines and the schema: connecting with a safe URL, checking a database before a run,
creating and upgrading the tables, a database fault as a `StoreError`.

SQLAlchemy Core only, portable across SQLite, PostgreSQL and MariaDB/MySQL. Times in
databases without a zone (SQLite, MariaDB) are UTC; PostgreSQL uses timestamptz.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import BigInteger, Engine, cast, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from recon.core.errors import ConfigError, StoreError
from recon.store.tables import (
    APPEND_ONLY_EVENTS,
    metadata,
    ovo_payments,
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
              "recon_locks", "recon_cases", "recon_case_events", "recon_case_occurrences",
              "recon_case_numbers")


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
            if conn.dialect.name == "postgresql":
                for statement in APPEND_ONLY_EVENTS:
                    conn.execute(text(statement))
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


def minor_amount(column: Any) -> Any:
    return cast(func.round(column * 100), BigInteger)


def as_frame(rows: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


#: Rows turned into COPY bytes, CSV or driver tuples at a time.
WRITE_BATCH_ROWS = 100_000


def bulk_insert(conn: Any, table: Any, rows: pd.DataFrame | pa.Table) -> None:
    """Write `rows` (columns named as the table's) inside the connection's transaction:
    COPY on PostgreSQL, driver-level executemany elsewhere; never row by row. Either way a
    batch at a time, so the rows are never all text or Python objects at once."""
    data = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(
        rows, preserve_index=False)
    if not data.num_rows:
        return
    names = data.column_names
    batches = data.to_batches(max_chunksize=WRITE_BATCH_ROWS)
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
