"""Persisting a run: its row in recon_runs, its exceptions and its ledger, written in one
transaction that the caller commits once the reports are staged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from recon.core import categories as cat
from recon.core.errors import StoreError
from recon.core.money import minor_text
from recon.core.result import Ledger, ReconResult
from recon.core.schemas import text_array
from recon.store.cases import CaseStanding, record_cases
from recon.store.copy import LEDGER_COPY_COLUMNS
from recon.store.engine import WRITE_BATCH_ROWS, bulk_insert, database_error
from recon.store.history import RunRecord
from recon.store.ledger import (
    LEDGER_STAGING,
    PROGRESS_ROWS,
    LedgerParts,
    apply_staged,
    delete_ledger,
    insert_ledger,
)
from recon.store.load import settle_future
from recon.store.tables import recon_exceptions, recon_ledger, recon_runs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersistedRun:
    run_id: int
    attempt: int
    rerun: bool
    finished_at: dt.datetime
    cases: CaseStanding | None = None  # the merchant's cases as the run leaves them


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
EXCEPTION_COLUMNS = pa.schema(
    [(c.name, pa.int64() if c.name in {"run_id", "line_no"} else pa.large_string())
     for c in recon_exceptions.c if c.name not in {"exception_id", "closed_by_line"}])


def exception_tables(result: ReconResult, merchant_id: str, day: dt.date, run_id: int,
                     batch_rows: int = 100_000) -> Iterator[pa.Table]:
    """Every exception of the run, `batch_rows` at a time, as database-ready columns: the
    flagged settlement rows (in the order `FlaggedRows.in_order` gives them), then
    the MISSING_IN_SETTLEMENT records. Made column by column
    in Arrow a batch at a time: a bad day flags every row of the file, and a Python object
    per cell took 2.6 s and 0.5 GB for a million of them."""
    def batches() -> Iterator[tuple[Callable[[pd.DataFrame], dict[str, pa.Array]],
                                    pd.DataFrame]]:
        for frame in result.flagged.in_order(batch_rows):
            yield _flagged_columns, frame
        for start in range(0, len(result.missing), batch_rows):
            yield _missing_columns, result.missing.iloc[start:start + batch_rows]

    for columns_of, frame in batches():
        columns = {"merchant_id": _filled(len(frame), merchant_id),
                   "settlement_date": _filled(len(frame), day.isoformat()),
                   "run_id": pa.array(np.full(len(frame), run_id, dtype=np.int64)),
                   **columns_of(frame)}
        yield pa.table(columns).cast(EXCEPTION_COLUMNS)


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
        self._parts: LedgerParts | None = None  # the ledger written a part at a time
        self.ledger_seconds: float | None = None  # the ledger written alongside, how long
        self.ledger_kept: int | None = None  # a re-run's entries left as the run before wrote them

    def write_ledger(self, ledger: Ledger, run: RunRecord) -> None:
        """Begin the run's transaction and write `ledger`, while the caller goes on."""
        if self._begun is not None or self._parts is not None:
            raise RuntimeError("the run's ledger is being written already")
        if self._engine.dialect.name == "sqlite":
            return
        self._begun = Future()
        threading.Thread(target=settle_future, args=(self._begun, partial(
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

    def _begin_parts(self, run: RunRecord) -> LedgerParts:
        if self._engine.dialect.name == "sqlite":
            self._conn = conn = self._engine.connect()
            # A failed run's table lives on with its connection, which the pool keeps.
            conn.execute(text(f"DROP TABLE IF EXISTS temp.{LEDGER_STAGING.name}"))
            LEDGER_STAGING.create(conn)
            return LedgerParts(table=LEDGER_STAGING, run_id=0, attempt=0, staged=True)
        run_id, attempt = self._begin_run(run)
        rerun = attempt > 1 and self._engine.dialect.name == "postgresql"
        if rerun:
            LEDGER_STAGING.create(self._conn)
        else:
            delete_ledger(self._conn, run.merchant_id, run.settlement_date)
        return LedgerParts(table=LEDGER_STAGING if rerun else recon_ledger, run_id=run_id,
                            attempt=attempt, staged=rerun)

    def _finish_parts(self, parts: LedgerParts, run: RunRecord) -> tuple[int, int]:
        """The parts' ledger in place, once every part is written: the run id and attempt."""
        conn, merchant, day = self._conn, run.merchant_id, run.settlement_date
        if conn.dialect.name == "sqlite":
            run_id, attempt = self._begin_run(run)
            delete_ledger(conn, merchant, day)
            columns = ", ".join(name for name in LEDGER_COPY_COLUMNS if name != "run_id")
            conn.execute(text(
                f"INSERT INTO {recon_ledger.name} (run_id, {columns}) "
                f"SELECT :run_id, {columns} FROM temp.{parts.table.name} ORDER BY settle_key"),
                {"run_id": run_id})
            conn.execute(text(f"DROP TABLE temp.{parts.table.name}"))
            return run_id, attempt
        if parts.staged:
            self.ledger_kept = apply_staged(conn, merchant, day, parts.entries)
        return parts.run_id, parts.attempt

    def _begin(self, ledger: Ledger, run: RunRecord) -> tuple[int, int]:
        run_id, attempt = self._begin_run(run)
        self.ledger_kept = insert_ledger(self._conn, ledger, run.merchant_id,
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
            for exceptions in exception_tables(result, merchant, day, run_id,
                                               WRITE_BATCH_ROWS):
                bulk_insert(conn, exc_t, exceptions)
                written += exceptions.num_rows
                if written - logged >= PROGRESS_ROWS and written < result.exceptions:
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
            standing = record_cases(conn, result, merchant, day, run_id, finished)
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
                            finished_at=finished, cases=standing)

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
