"""Looking up a file's keys in the records: the keys staged in a table of their own and
joined (`SqlLookups`), or read through ADBC into Arrow on PostgreSQL (`ArrowLookups`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
from sqlalchemy import Column, Engine, MetaData, String, Table, select, text, union_all
from sqlalchemy.dialects import postgresql

from recon.core.schemas import arrow_frame

#: The planner's cost of a page read out of order on the connection that joins the key
#: tables (PostgreSQL's default, 4, is for spinning disks). With it a few thousand keys
#: are probed in a primary key's index rather than by reading the whole table. The
#: window's own range scans keep the default: at this cost the planner reads a large
#: window by its time index, which is slower (figures: `bench/ROUNDS.md`, the constants).
KEY_LOOKUP_PAGE_COST = 1.1


#: The settings of a connection that looks keys up (`ArrowLookups.use_lookup_settings`): the page
#: cost above, and no parallel workers. Their queries run beside the window's load on a
#: 2-core machine, where a worker takes a core from it; the payments' primary key finds
#: the window's refunds in one process faster than hashing the payments in three.
KEY_LOOKUP_SETTINGS = (f"SET random_page_cost = {KEY_LOOKUP_PAGE_COST}",
                       "SET max_parallel_workers_per_gather = 0")


#: The sample ANALYZE takes of a key table, as PostgreSQL's statistics target (300 rows
#: per unit): the planner needs a key table's size and whether its keys repeat, which 300
#: rows tell, not a histogram of its keys, which the default sample is read for.
KEY_TABLE_STATISTICS = 1


#: From this many ledger entries per key looked up, the ledger's lookups by settle key
#: probe its primary key (`ArrowLookups.probing_ledger`). The planner hashes the keys
#: and reads the whole ledger, which is fast while the ledger is small and grows with
#: it, where probes grow with the keys only (figures: `bench/ROUNDS.md`, the constants).
LEDGER_PROBE_RATIO = 4


#: The per-connection temporary tables of lookup keys a load joins against, one per kind
#: of key: a query reads only the kinds it needs, not a million keys of another kind.
KEY_TAGS = ("file", "rinv", "rno", "oref", "pay", "rorig", "rec_only", "rkey")


LOAD_KEYS = {tag: Table(f"recon_load_keys_{tag}", MetaData(),
                        Column("k", String(255), nullable=False), prefixes=["TEMPORARY"])
             for tag in KEY_TAGS}


def keyed_by(columns: Sequence[Any], column: Any, tags: Sequence[str], *conditions: Any) -> Any:
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


class Lookups(Protocol):
    """One load's connection: keys into LOAD_KEYS, queries into frames."""

    dialect: Any

    def add_keys(self, keys: dict[str, pa.Array]) -> None: ...

    def fetch(self, query: Any, names: Sequence[str]) -> pd.DataFrame: ...

    def probing_ledger(self, keys: int) -> contextlib.AbstractContextManager[None]: ...


class SqlLookups:
    """Through SQLAlchemy (SQLite, MariaDB): executemany in, driver rows out."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.dialect = conn.dialect

    def __enter__(self) -> SqlLookups:
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
        return object_frame(self.conn.execute(query).fetchall(), names)

    def probing_ledger(self, keys: int) -> contextlib.AbstractContextManager[None]:
        """The planner's own choice (`ArrowLookups.probing_ledger`)."""
        return contextlib.nullcontext()


def object_frame(rows: Sequence[Any], names: Sequence[str]) -> pd.DataFrame:
    """Driver rows as a frame of object columns named `names` (typed by the caller)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pd.DataFrame({name: pd.Series(values, dtype="object")
                         for name, values in zip(names, columns, strict=True)})


class ArrowLookups:
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

    def __enter__(self) -> ArrowLookups:
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
        self.cursor.execute(written_in(query, self.dialect))
        return self.cursor.fetch_arrow_table().rename_columns(list(names))


def written_in(query: Any, dialect: Any) -> str:
    """`query` as SQL text with its values written in, for PostgreSQL with standard
    conforming strings: texts quoted (quotes doubled), numbers, and times with their
    offset. The values are the run's merchant, dates and bounds: the keys, which come from
    the file, go in through key tables."""
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


@contextlib.contextmanager
def load_connection(engine: Engine) -> Iterator[tuple[Any, Lookups]]:
    """A load's connection and its lookups: through ADBC on PostgreSQL (a connection of
    their own), on the connection elsewhere."""
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(engine.connect())
        lookups: Lookups
        if engine.dialect.name == "postgresql":
            lookups = stack.enter_context(ArrowLookups(engine, key_lookups=True))
        else:
            lookups = stack.enter_context(SqlLookups(conn))
        yield conn, lookups
