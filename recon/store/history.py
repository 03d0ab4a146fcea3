"""A merchant's runs: the record of one, the next attempt's number, and the latest runs
for the workbook's trend.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from recon.store.engine import as_frame, database_error
from recon.store.tables import recon_runs


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
            frame = as_frame(list(conn.execute(query)),
                             ["settlement_date", "exceptions", "file_rows", "attempt"])
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return frame.iloc[::-1].reset_index(drop=True)
