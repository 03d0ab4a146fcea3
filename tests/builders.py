"""Small frame builders for engine tests (money as decimal text, times as WIB text), and
what a store holds after a run."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pandas as pd

from recon.core.calendar import WIB, WorkingCalendar
from recon.core.fees import FeeRules
from recon.core.money import to_minor
from recon.core.result import MatchContext
from recon.core.schemas import LEDGER, OPEN_ITEMS, PAYMENTS, REFUNDS, SETTLEMENT_ROWS, conform
from recon.formats.values import wib_dates
from recon.store.tables import recon_exceptions, recon_ledger, recon_runs

S = dt.date(2026, 11, 30)
CASH_RATE = Decimal("0.007")


def utc(text: str) -> pd.Timestamp:
    moment = pd.Timestamp(text)
    if moment.tzinfo is None:
        moment = moment.tz_localize(WIB)
    return moment.tz_convert("UTC")


def fees(gross: str, rate: Decimal = CASH_RATE) -> dict[str, str]:
    g = Decimal(gross)
    mdr = (g * rate).quantize(Decimal("0.01"), ROUND_HALF_UP)
    tax = (mdr * Decimal("0.11")).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return {"mdr": str(mdr), "tax": str(tax), "net": str(g - mdr - tax)}


def payment_row(invoice: str, gross: str, time: str = "2026-11-27 10:00:00",
                **extra: Any) -> dict[str, Any]:
    row = {"transaction_type": "PAYMENT", "merchant_invoice": invoice, "gross": gross,
           "time": time, "payment_source": "OVO_CASH", **fees(gross)}
    row.update(extra)
    return row


def refund_row(invoice: str, amount: str, refund_invoice: str = "", ovo_ref: str = "",
               time: str = "2026-11-28 10:00:00", **extra: Any) -> dict[str, Any]:
    row = {"transaction_type": "REFUND", "merchant_invoice": invoice, "gross": f"-{amount}",
           "refund_invoice": refund_invoice, "ovo_reference_no": ovo_ref, "time": time,
           "payment_source": "OVO_CASH", "mdr": "0", "tax": "0", "net": f"-{amount}"}
    row.update(extra)
    return row


def rows_frame(rows: list[dict[str, Any]], day: dt.date = S) -> pd.DataFrame:
    records = []
    for number, row in enumerate(rows, start=2):
        time = utc(row.get("time", "2026-11-27 10:00:00"))
        records.append({
            "line_no": row.get("line_no", number), "settlement_date": day,
            "transaction_time": time, "transaction_date": None,
            "merchant_id": "M001", "store_id": "", "merchant_invoice": row["merchant_invoice"],
            "refund_invoice": row.get("refund_invoice", ""),
            "ovo_reference_no": row.get("ovo_reference_no", f"OVO-{number}"),
            "transaction_type": row["transaction_type"],
            "payment_source": row.get("payment_source", "OVO_CASH"),
            **{k: (to_minor(row[k]) if row.get(k) not in (None, "") else None)
               for k in ("gross", "mdr", "tax", "net")},
            "invalid_reason": row.get("invalid_reason", ""),
        })
    frame = pd.DataFrame(records, columns=list(SETTLEMENT_ROWS))
    frame["transaction_time"] = pd.to_datetime(frame["transaction_time"], utc=True)
    frame["transaction_date"] = wib_dates(frame["transaction_time"])
    for col in ("gross", "mdr", "tax", "net"):
        frame[col] = frame[col].astype("Int64")
    return conform(frame, SETTLEMENT_ROWS, "test rows")


def payments_frame(items: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """(partner_reference_no, amount, status, WIB time) tuples."""
    frame = pd.DataFrame({
        "partner_reference_no": [i[0] for i in items],
        "reference_no": [f"R-{i[0]}" for i in items],
        "merchant_id": "M001", "store_id": "",
        "amount": pd.array([to_minor(i[1]) for i in items], dtype="Int64"),
        "pay_option": "OVO_CASH",
        "status": [i[2] for i in items],
        "transaction_time": pd.Series([utc(i[3]) for i in items], dtype="datetime64[ns, UTC]"),
    })
    frame["transaction_date"] = wib_dates(frame["transaction_time"])
    return conform(frame, PAYMENTS, "test payments")


def refunds_frame(items: list[tuple[str, str, str, str, str, str]]) -> pd.DataFrame:
    """(partner_refund_no, original, refund_no, amount, status, WIB time) tuples."""
    frame = pd.DataFrame({
        "partner_refund_no": [i[0] for i in items],
        "original_partner_reference_no": [i[1] for i in items],
        "refund_no": [i[2] for i in items],
        "refund_amount": pd.array([to_minor(i[3]) for i in items], dtype="Int64"),
        "status": [i[4] for i in items],
        "refund_time": pd.Series([utc(i[5]) for i in items], dtype="datetime64[ns, UTC]"),
    })
    frame["refund_date"] = wib_dates(frame["refund_time"])
    return conform(frame, REFUNDS, "test refunds")


def ledger_frame(items: list[tuple[dt.date, str, str, str, str, str]]) -> pd.DataFrame:
    """(settlement_date, kind, settle_key, record_key, original, amount) tuples."""
    frame = pd.DataFrame({
        "settlement_date": [i[0] for i in items], "kind": [i[1] for i in items],
        "settle_key": [i[2] for i in items], "record_key": [i[3] for i in items],
        "original_reference_no": [i[4] for i in items],
        "amount": pd.array([to_minor(i[5]) for i in items], dtype="Int64"),
        "line_no": list(range(2, 2 + len(items))),
    }, columns=list(LEDGER))
    return conform(frame, LEDGER, "test ledger")


def open_items_frame(items: list[tuple[int, dt.date, str, str, str]]) -> pd.DataFrame:
    """(exception_id, opened_date, kind, record_key, amount) tuples."""
    frame = pd.DataFrame({
        "exception_id": [i[0] for i in items], "opened_date": [i[1] for i in items],
        "kind": [i[2] for i in items], "record_key": [i[3] for i in items],
        "amount": pd.array([to_minor(i[4]) for i in items], dtype="Int64"),
        "record_date": [None for _ in items],
    }, columns=list(OPEN_ITEMS))
    return conform(frame, OPEN_ITEMS, "test open items")


def context(day: dt.date = S, rates: dict[str, Decimal] | None = None,
            window: int = 60) -> MatchContext:
    return MatchContext(merchant_id="M001", settlement_date=day, calendar=WorkingCalendar(),
                        fee_rules=FeeRules(mdr_rates={"OVO_CASH": CASH_RATE}
                                           if rates is None else rates),
                        refund_window_days=window)


def stored_state(engine: Any) -> tuple[list, list, list]:
    """The ledger without its run ids, the exceptions without their ids, and each run's
    attempt and whether it is the current one, in run order."""
    with engine.connect() as conn:
        ledger = sorted(tuple(r) for r in conn.execute(recon_ledger.select().with_only_columns(
            *[c for c in recon_ledger.c if c.name != "run_id"])))
        exceptions = sorted(tuple(str(v) for v in r) for r in conn.execute(
            recon_exceptions.select().with_only_columns(
                *[c for c in recon_exceptions.c if c.name not in {"exception_id", "run_id"}])))
        runs = [tuple(r) for r in conn.execute(
            recon_runs.select().with_only_columns(recon_runs.c.attempt, recon_runs.c.is_current)
            .order_by(recon_runs.c.run_id))]
    return ledger, exceptions, runs
