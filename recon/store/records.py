"""Write merchant records (ovo_payments, ovo_refunds): for the demo, tests and tooling.

Amounts are Decimal; times are timezone-aware and stored per SPEC section 4 (UTC in
databases without a zone).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, insert

from recon.store.tables import ovo_payments, ovo_refunds


def _moment(engine: Engine, value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"time {value} has no timezone")
    utc = value.astimezone(dt.UTC)
    return utc if engine.dialect.name == "postgresql" else utc.replace(tzinfo=None)


def insert_records(engine: Engine, payments: Iterable[Mapping[str, Any]],
                   refunds: Iterable[Mapping[str, Any]] = (), batch: int = 5000) -> None:
    pay = [{**p, "transaction_time": _moment(engine, p["transaction_time"]),
            "paid_time": _moment(engine, p.get("paid_time"))} for p in payments]
    ref = [{**r, "refund_time": _moment(engine, r["refund_time"])} for r in refunds]
    with engine.begin() as conn:
        for table, rows in ((ovo_payments, pay), (ovo_refunds, ref)):
            for start in range(0, len(rows), batch):
                conn.execute(insert(table), rows[start:start + batch])
