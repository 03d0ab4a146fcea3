"""One run per (merchant, settlement date) at a time, held in the database.

PostgreSQL: a session advisory lock; MariaDB/MySQL: GET_LOCK; SQLite: a row in
recon_locks (a dead holder on this host is detected by its process id and taken over).
A second run waits up to `wait_seconds`, then refuses with RunLocked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, delete, insert, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from recon.errors import RunLocked
from recon.store import database_error
from recon.tables import recon_locks

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


def _try_row_lock(engine: Engine, merchant_id: str, day: dt.date) -> bool:
    t = recon_locks
    try:
        with engine.begin() as conn:
            conn.execute(insert(t).values(merchant_id=merchant_id, settlement_date=day,
                                          holder=_holder(), acquired_at=dt.datetime.now(dt.UTC)))
        return True
    except IntegrityError:
        pass
    with engine.begin() as conn:
        holder = conn.execute(select(t.c.holder).where(
            t.c.merchant_id == merchant_id, t.c.settlement_date == day)).scalar_one_or_none()
        if holder is not None and _holder_is_dead(holder):
            log.warning("taking over the lock of %s, a run that is no longer alive", holder)
            conn.execute(delete(t).where(t.c.merchant_id == merchant_id,
                                         t.c.settlement_date == day, t.c.holder == holder))
    return False


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
                  wait_seconds: float) -> Iterator[None]:
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
            while not _try_row_lock(engine, merchant_id, settlement_date):
                if time.monotonic() >= deadline:
                    raise refused
                if not announced:
                    log.info("waiting for another run of %s %s", merchant_id, settlement_date)
                    announced = True
                time.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                with engine.begin() as conn:
                    conn.execute(delete(recon_locks).where(
                        recon_locks.c.merchant_id == merchant_id,
                        recon_locks.c.settlement_date == settlement_date))
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
