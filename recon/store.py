"""Database adapter: create tables, load what a run needs, persist a run atomically.

SQLAlchemy Core only, portable across SQLite, PostgreSQL and MariaDB/MySQL. Times in
databases without a zone (SQLite, MariaDB) are UTC; PostgreSQL uses timestamptz.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Engine,
    String,
    and_,
    bindparam,
    cast,
    create_engine,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from recon import categories as cat
from recon.errors import ConfigError, StoreError
from recon.matching import ReconResult
from recon.money import from_minor
from recon.reader import wib_dates
from recon.schemas import LEDGER, OPEN_ITEMS, PAYMENTS, REFUNDS, conform, empty_frame
from recon.tables import (
    metadata,
    ovo_payments,
    ovo_refunds,
    recon_exceptions,
    recon_ledger,
    recon_runs,
)

log = logging.getLogger(__name__)

CHUNK = 5000  # bound parameters per IN list (SQLite allows 32,766)


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


#: Plain scheme -> the driver this project installs.
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
                   "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


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
        kwargs["connect_args"] = {"init_command": "SET time_zone = '+00:00'"}
        kwargs["pool_recycle"] = 3600
    try:
        return create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"no database driver for {safe_url(url)} ({exc})") from exc


def database_error(engine: Engine, exc: SQLAlchemyError) -> StoreError:
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(detail).split())[:300]
    return StoreError(f"database {safe_url(str(engine.url))}: {text}")


def init_db(engine: Engine) -> list[str]:
    """Create every table that does not exist yet; returns the names created."""
    try:
        with engine.begin() as conn:
            existing = set(engine.dialect.get_table_names(conn))
            metadata.create_all(conn, checkfirst=True)
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return [t.name for t in metadata.sorted_tables if t.name not in existing]


def _chunks(values: Sequence[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def _key_filters(conn: Any, column: Any, keys: Sequence[str]) -> Iterator[Any]:
    """WHERE clauses selecting rows whose `column` is in `keys`: one array parameter on
    PostgreSQL, chunks of bound parameters elsewhere."""
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        yield column == func.any(bindparam("keys", list(keys), type_=ARRAY(String)))
        return
    for chunk in _chunks(keys):
        yield column.in_(chunk)


def to_utc(values: pd.Series) -> pd.Series:
    """Database times (aware, naive-UTC datetimes or text) -> datetime64[ns, UTC]."""
    if values.empty:
        return pd.Series(dtype="datetime64[ns, UTC]", index=values.index)
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


def _time_bound(engine: Engine, moment: dt.datetime) -> Any:
    if engine.dialect.name == "postgresql":
        return moment
    return moment.replace(tzinfo=None)


def load_run_inputs(
    engine: Engine,
    merchant_id: str,
    settlement_date: dt.date,
    covered: Sequence[dt.date],
    rows: pd.DataFrame,
) -> RunInputs:
    """Records for the covered window, plus those the file and the open items refer to."""
    try:
        with engine.connect() as conn:
            open_items = _load_open_items(conn, merchant_id, settlement_date)
            invoices = sorted(set(rows["merchant_invoice"]) - {""})
            refund_keys = sorted(set(rows.loc[rows["transaction_type"] == cat.REFUND,
                                              "refund_invoice"]) - {""})
            refund_nos = sorted(set(rows.loc[rows["transaction_type"] == cat.REFUND,
                                             "ovo_reference_no"]) - {""})
            open_pay = sorted(set(open_items.loc[open_items["kind"] == cat.PAYMENT,
                                                 "record_key"]))
            open_ref = sorted(set(open_items.loc[open_items["kind"] == cat.REFUND,
                                                 "record_key"]))
            start, end = _window(covered)
            lo, hi = _time_bound(engine, start), _time_bound(engine, end)
            pay_keys = sorted(set(invoices) | set(open_pay))
            payments = _load_payments(conn, merchant_id, lo, hi, pay_keys)
            refunds = _load_refunds(conn, merchant_id, lo, hi, invoices, refund_keys, refund_nos,
                                    open_ref)
            record_keys = sorted(set(payments["partner_reference_no"])
                                 | set(refunds["partner_refund_no"]))
            ledger = _load_ledger(conn, merchant_id, settlement_date, rows, invoices, record_keys)
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return RunInputs(payments, refunds, ledger, open_items)


def _load_payments(conn: Any, merchant_id: str, lo: Any, hi: Any,
                   keys: Sequence[str]) -> pd.DataFrame:
    t = ovo_payments
    columns = [t.c.partner_reference_no, t.c.reference_no, t.c.merchant_id, t.c.store_id,
               _minor(t.c.amount).label("amount"), t.c.pay_option, t.c.status,
               type_coerce(t.c.transaction_time, String).label("transaction_time")]
    names = [c.name for c in columns]
    found = list(conn.execute(select(*columns).where(
        t.c.merchant_id == merchant_id, t.c.transaction_time >= lo, t.c.transaction_time < hi)))
    for clause in _key_filters(conn, t.c.partner_reference_no, keys):
        found += conn.execute(select(*columns).where(clause))
    frame = _as_frame(found, names).drop_duplicates("partner_reference_no")
    if frame.empty:
        return empty_frame(PAYMENTS)
    frame["transaction_time"] = to_utc(frame["transaction_time"])
    frame["transaction_date"] = wib_dates(frame["transaction_time"])
    frame["status"] = frame["status"].fillna("").astype(str).str.strip()
    frame["pay_option"] = frame["pay_option"].fillna("").astype(str).str.strip().str.upper()
    return conform(frame, PAYMENTS, "payments")


def _load_refunds(conn: Any, merchant_id: str, lo: Any, hi: Any, invoices: Sequence[str],
                  refund_keys: Sequence[str], refund_nos: Sequence[str],
                  open_keys: Sequence[str]) -> pd.DataFrame:
    t = ovo_refunds
    columns = [t.c.partner_refund_no, t.c.original_partner_reference_no, t.c.refund_no,
               _minor(t.c.refund_amount).label("refund_amount"),
               type_coerce(t.c.refund_time, String).label("refund_time"), t.c.status]
    names = [c.name for c in columns]
    # The refunds table has no merchant column: a refund belongs to its payment's merchant.
    merchants_payments = select(ovo_payments.c.partner_reference_no).where(
        ovo_payments.c.merchant_id == merchant_id)
    found = list(conn.execute(select(*columns).where(
        t.c.refund_time >= lo, t.c.refund_time < hi,
        t.c.original_partner_reference_no.in_(merchants_payments))))
    for column, keys in ((t.c.original_partner_reference_no, invoices),
                         (t.c.partner_refund_no, sorted(set(refund_keys) | set(open_keys))),
                         (t.c.refund_no, refund_nos)):
        for clause in _key_filters(conn, column, keys):
            found += conn.execute(select(*columns).where(clause))
    frame = _as_frame(found, names).drop_duplicates("partner_refund_no")
    if frame.empty:
        return empty_frame(REFUNDS)
    frame["refund_time"] = to_utc(frame["refund_time"])
    frame["refund_date"] = wib_dates(frame["refund_time"])
    frame["status"] = frame["status"].fillna("").astype(str).str.strip()
    return conform(frame, REFUNDS, "refunds")


def _load_ledger(conn: Any, merchant_id: str, settlement_date: dt.date, rows: pd.DataFrame,
                 invoices: Sequence[str], record_keys: Sequence[str]) -> pd.DataFrame:
    t = recon_ledger
    columns = [t.c.ledger_id, t.c.settlement_date, t.c.kind, t.c.settle_key, t.c.record_key,
               t.c.original_reference_no, _minor(t.c.amount).label("amount"), t.c.line_no]
    names = [c.name for c in columns]
    base = and_(t.c.merchant_id == merchant_id, t.c.settlement_date != settlement_date)
    settle_keys = sorted((set(rows["merchant_invoice"]) | set(rows["refund_invoice"])
                          | set(rows["ovo_reference_no"])) - {""})
    found: list[Any] = []
    for column, keys in ((t.c.settle_key, settle_keys), (t.c.record_key, record_keys),
                         (t.c.original_reference_no, invoices)):
        for clause in _key_filters(conn, column, keys):
            found += conn.execute(select(*columns).where(base, clause))
    frame = _as_frame(found, names).drop_duplicates("ledger_id")
    if frame.empty:
        return empty_frame(LEDGER)
    return conform(frame, LEDGER, "ledger")


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


def _money(value: Any) -> Decimal | None:
    if value is None or pd.isna(value):
        return None
    return from_minor(int(value))


def _nullable(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _exception_rows(result: ReconResult, merchant_id: str, day: dt.date,
                   run_id: int) -> list[dict]:
    rows = result.rows
    flagged = rows.loc[rows["category"] != cat.MATCHED]
    out = []
    for r in flagged.itertuples(index=False):
        out.append({
            "merchant_id": merchant_id, "settlement_date": day, "run_id": run_id,
            "category": r.category, "kind": r.transaction_type or "?", "line_no": int(r.line_no),
            "merchant_invoice": r.merchant_invoice, "refund_invoice": r.refund_invoice,
            "ovo_reference_no": r.ovo_reference_no, "record_key": r.record_key or None,
            "record_date": _nullable(r.record_date), "file_amount": _money(r.gross),
            "record_amount": _money(r.record_amount), "delta": _money(r.delta),
            "reason": r.reason, "flags": r.flags or None, "state": None,
            "closed_by_date": None, "closed_by_line": None,
        })
    for m in result.missing.itertuples(index=False):
        closed_by = _nullable(m.closed_by_date)
        out.append({
            "merchant_id": merchant_id, "settlement_date": day, "run_id": run_id,
            "category": cat.MISSING_IN_SETTLEMENT, "kind": m.kind, "line_no": None,
            "merchant_invoice": m.original_reference_no,
            "refund_invoice": m.record_key if m.kind == cat.REFUND else None,
            "ovo_reference_no": m.reference_no, "record_key": m.record_key,
            "record_date": m.record_date, "file_amount": None,
            "record_amount": _money(m.signed_amount), "delta": None,
            "reason": f"{m.kind.lower()} of {m.record_date} not in the settlement file",
            "flags": None, "state": "closed" if closed_by else "open",
            "closed_by_date": closed_by, "closed_by_line": None,
        })
    return out


def persist_run(engine: Engine, result: ReconResult, run: RunRecord) -> PersistedRun:
    """Replace what earlier runs of this date wrote, in one transaction; keep run history."""
    day, merchant = run.settlement_date, run.merchant_id
    finished = dt.datetime.now(dt.UTC)
    runs = recon_runs
    try:
        with engine.begin() as conn:
            attempt = conn.execute(select(func.count()).select_from(runs).where(
                runs.c.merchant_id == merchant, runs.c.settlement_date == day)).scalar_one() + 1
            conn.execute(update(runs).where(runs.c.merchant_id == merchant,
                                            runs.c.settlement_date == day)
                         .values(is_current=False))
            run_id = conn.execute(insert(runs).values(
                merchant_id=merchant, settlement_date=day, attempt=attempt, is_current=True,
                started_at=run.started_at, finished_at=finished, file_name=run.file_name,
                file_sha256=run.file_sha256, file_rows=run.file_rows,
                archive_path=run.archive_path, exceptions=run.exceptions,
                summary_json=json.dumps(run.summary, sort_keys=True),
            )).inserted_primary_key
            run_id = run_id[0] if run_id else None
            if run_id is None:
                raise StoreError("the database returned no id for the new run")
            exc_t, led_t = recon_exceptions, recon_ledger
            conn.execute(delete(led_t).where(led_t.c.merchant_id == merchant,
                                             led_t.c.settlement_date == day))
            conn.execute(delete(exc_t).where(exc_t.c.merchant_id == merchant,
                                             exc_t.c.settlement_date == day))
            conn.execute(update(exc_t).where(exc_t.c.merchant_id == merchant,
                                             exc_t.c.closed_by_date == day)
                         .values(state="open", closed_by_date=None, closed_by_line=None))
            ledger_rows = [
                {"merchant_id": merchant, "settlement_date": day, "run_id": run_id,
                 "kind": e.kind, "settle_key": e.settle_key, "record_key": e.record_key,
                 "original_reference_no": e.original_reference_no,
                 "amount": _money(e.amount) or Decimal("0.00"), "line_no": int(e.line_no)}
                for e in result.ledger.itertuples(index=False)
            ]
            _insert_many(conn, led_t, ledger_rows)
            _insert_many(conn, exc_t, _exception_rows(result, merchant, day, run_id))
            closures = [{"b_id": int(c.exception_id), "b_line": int(c.line_no)}
                        for c in result.closures.itertuples(index=False)]
            if closures:
                conn.execute(
                    update(exc_t).where(exc_t.c.exception_id == bindparam("b_id"))
                    .values(state="closed", closed_by_date=day,
                            closed_by_line=bindparam("b_line")),
                    closures,
                )
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    log.info("persisted run %s (attempt %d): %d ledger entries, %d closures", run_id, attempt,
             len(result.ledger), len(result.closures))
    return PersistedRun(run_id=int(run_id), attempt=int(attempt), rerun=attempt > 1,
                        finished_at=finished)


def _insert_many(conn: Any, table: Any, rows: list[dict], batch: int = 5000) -> None:
    for start in range(0, len(rows), batch):
        conn.execute(insert(table), rows[start:start + batch])
        done = min(start + batch, len(rows))
        if done % 100_000 == 0 and done < len(rows):
            log.info("%s: %d of %d rows written", table.name, done, len(rows))


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
