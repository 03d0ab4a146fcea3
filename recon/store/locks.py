"""One run per (merchant, settlement date) at a time, held in the database.

PostgreSQL: a session advisory lock; MariaDB/MySQL: GET_LOCK (both end with the holder's
session). SQLite: a row in recon_locks whose holder renews its heartbeat while it runs; a
dead holder on this host (its process is gone), or a holder anywhere whose heartbeat is
older than `stale_seconds`, is taken over. A second run waits up to `wait_seconds`, then
refuses with RunLocked. `release_lock` is the operator's `recon unlock`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from recon.core.errors import RunLocked
from recon.store.engine import database_error
from recon.store.tables import recon_locks

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5


def lock_name(database: str, merchant_id: str, settlement_date: dt.date) -> str:
    """A server-wide lock name (MariaDB's GET_LOCK is not per database), at most 64 chars."""
    name = f"ovo-recon:{database}:{merchant_id}:{settlement_date.isoformat()}"
    if len(name) <= 64:
        return name
    return "ovo-recon:" + hashlib.sha256(name.encode()).hexdigest()[:48]


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_is_dead(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _as_utc(moment: dt.datetime | str | None) -> dt.datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _why_stale(holder: str, heartbeat: dt.datetime | None, stale_seconds: float) -> str:
    """Why a lock row's holder is dead ('' while it may be alive)."""
    if _holder_is_dead(holder):
        return "its process is no longer alive"
    if heartbeat is None:
        return ""
    age = (dt.datetime.now(dt.UTC) - heartbeat).total_seconds()
    if age > stale_seconds:
        return f"its heartbeat is {age:.0f} s old (lock_stale_seconds {stale_seconds:g})"
    return ""


def _row_holder(conn: Connection, merchant_id: str, day: dt.date
                ) -> tuple[str, dt.datetime | None] | None:
    t = recon_locks
    row = conn.execute(select(t.c.holder, t.c.heartbeat_at, t.c.acquired_at).where(
        t.c.merchant_id == merchant_id, t.c.settlement_date == day)).first()
    if row is None:
        return None
    return str(row.holder), _as_utc(row.heartbeat_at) or _as_utc(row.acquired_at)


def _try_row_lock(engine: Engine, merchant_id: str, day: dt.date,
                  stale_seconds: float) -> bool:
    t = recon_locks
    now = dt.datetime.now(dt.UTC)
    try:
        with engine.begin() as conn:
            conn.execute(insert(t).values(merchant_id=merchant_id, settlement_date=day,
                                          holder=_holder(), acquired_at=now, heartbeat_at=now))
        return True
    except IntegrityError:
        pass
    with engine.begin() as conn:
        found = _row_holder(conn, merchant_id, day)
        why = "" if found is None else _why_stale(found[0], found[1], stale_seconds)
        if found is not None and why:
            log.warning("taking over the lock of %s %s from %s: %s", merchant_id, day,
                        found[0], why)
            conn.execute(delete(t).where(t.c.merchant_id == merchant_id,
                                         t.c.settlement_date == day, t.c.holder == found[0]))
    return False


class _Heartbeat:
    """Renews the lock row's heartbeat every `every` seconds until stopped."""

    def __init__(self, engine: Engine, merchant_id: str, day: dt.date, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(engine, merchant_id, day,
                                                                  every),
                                        name="recon-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, engine: Engine, merchant_id: str, day: dt.date, every: float) -> None:
        t = recon_locks
        while not self._stop.wait(every):
            try:
                with engine.begin() as conn:
                    conn.execute(update(t).where(
                        t.c.merchant_id == merchant_id, t.c.settlement_date == day,
                        t.c.holder == _holder()).values(heartbeat_at=dt.datetime.now(dt.UTC)))
            except SQLAlchemyError as exc:  # the run's own write may hold the file a while
                log.debug("lock heartbeat not renewed this time: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _try_server_lock(conn: Connection, name: str) -> bool:
    if conn.dialect.name == "postgresql":
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                 {"k": _lock_key(name)}).scalar())
    return conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1


def _release_server_lock(conn: Connection, name: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
    else:
        conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name})


@contextlib.contextmanager
def hold_run_lock(engine: Engine, merchant_id: str, settlement_date: dt.date,
                  wait_seconds: float, stale_seconds: float = 300.0) -> Iterator[None]:
    """Hold the run lock for the body; wait up to `wait_seconds` for it, else RunLocked."""
    name = lock_name(engine.url.database or "", merchant_id, settlement_date)
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    refused = RunLocked(
        f"another run of {merchant_id} {settlement_date} is in progress "
        f"(waited {wait_seconds:g} s); try again when it has finished"
    )
    try:
        if engine.dialect.name == "sqlite":
            announced = False
            while not _try_row_lock(engine, merchant_id, settlement_date, stale_seconds):
                if time.monotonic() >= deadline:
                    raise refused
                if not announced:
                    log.info("waiting for another run of %s %s", merchant_id, settlement_date)
                    announced = True
                time.sleep(POLL_SECONDS)
            heartbeat = _Heartbeat(engine, merchant_id, settlement_date,
                                   max(min(stale_seconds / 4, 30.0), 0.05))
            try:
                yield
            finally:
                heartbeat.stop()
                with engine.begin() as conn:
                    conn.execute(delete(recon_locks).where(
                        recon_locks.c.merchant_id == merchant_id,
                        recon_locks.c.settlement_date == settlement_date,
                        recon_locks.c.holder == _holder()))
            return
        with engine.connect() as conn:
            announced = False
            while not _try_server_lock(conn, name):
                conn.commit()
                if time.monotonic() >= deadline:
                    raise refused
                if not announced:
                    log.info("waiting for another run of %s %s", merchant_id, settlement_date)
                    announced = True
                time.sleep(POLL_SECONDS)
            conn.commit()
            try:
                yield
            finally:
                _release_server_lock(conn, name)
                conn.commit()
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc


def release_lock(engine: Engine, merchant_id: str, settlement_date: dt.date,
                 stale_seconds: float) -> str:
    """Release the lock of (merchant, date) left by a run that is gone, after making sure
    no live run holds it: RunLocked while one may. What was done, in words."""
    what = f"{merchant_id} {settlement_date}"
    try:
        if engine.dialect.name != "sqlite":
            name = lock_name(engine.url.database or "", merchant_id, settlement_date)
            with engine.connect() as conn:
                if not _try_server_lock(conn, name):
                    raise RunLocked(f"the lock of {what} is held by a live database session; "
                                    "it ends with that run (stop the run to release it)")
                _release_server_lock(conn, name)
                conn.commit()
            return f"no run holds the lock of {what} (server locks end with their session)"
        with engine.begin() as conn:
            found = _row_holder(conn, merchant_id, settlement_date)
            if found is None:
                return f"no run holds the lock of {what}"
            holder, heartbeat = found
            why = _why_stale(holder, heartbeat, stale_seconds)
            if not why:
                age = ("" if heartbeat is None else
                       f", heartbeat {(dt.datetime.now(dt.UTC) - heartbeat).total_seconds():.0f}"
                       " s ago")
                raise RunLocked(f"the lock of {what} is held by {holder}, which may be alive"
                                f"{age}; stop that run, or wait lock_stale_seconds "
                                f"({stale_seconds:g} s) after it died")
            conn.execute(delete(recon_locks).where(
                recon_locks.c.merchant_id == merchant_id,
                recon_locks.c.settlement_date == settlement_date,
                recon_locks.c.holder == holder))
        log.warning("released the lock of %s held by %s: %s", what, holder, why)
        return f"released the lock of {what} held by {holder} ({why})"
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
