"""`recon demo`: a realistic merchant with every category planted, three settlement dates.

Deterministic (seeded). Payments over a week, refunds, and files for Mon 2026-11-30
(covers Fri 27 – Sun 29 Nov), Tue 2026-12-01 and Wed 2026-12-02, so carry-over of
missing items and their closing by a later file both show.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from recon.core.calendar import WIB, WorkingCalendar
from recon.formats.filegen import write_settlement_csv, write_settlement_xlsx
from recon.store.engine import init_db, make_engine
from recon.store.records import insert_records

MERCHANT = "M001"
MDR_RATES = {"OVO_CASH": Decimal("0.007"), "OVO_POINTS": Decimal("0.005")}
VAT = Decimal("0.11")
SOURCES = {"OVO_CASH": "OVO Cash", "OVO_POINTS": "OVO Points"}
DEMO_DATES = (dt.date(2026, 11, 30), dt.date(2026, 12, 1), dt.date(2026, 12, 2))


def _round(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass
class Payment:
    ref: str
    ovo_ref: str
    amount: Decimal
    option: str
    status: str
    time: dt.datetime
    store: str

    def record(self) -> dict[str, Any]:
        return {"partner_reference_no": self.ref, "reference_no": self.ovo_ref,
                "merchant_id": MERCHANT, "store_id": self.store, "amount": self.amount,
                "currency": "IDR", "pay_option": self.option, "status": self.status,
                "transaction_time": self.time, "paid_time": self.time + dt.timedelta(seconds=5)}


@dataclass
class Refund:
    ref: str
    original: Payment
    refund_no: str
    amount: Decimal
    time: dt.datetime
    status: str = "00"

    def record(self) -> dict[str, Any]:
        return {"partner_refund_no": self.ref, "original_partner_reference_no": self.original.ref,
                "refund_no": self.refund_no, "refund_amount": self.amount,
                "refund_time": self.time, "status": self.status}


def payment_row(day: dt.date, p: Payment, **changes: Any) -> dict[str, Any]:
    gross = changes.pop("gross", p.amount)
    mdr = _round(gross * MDR_RATES[p.option])
    tax = _round(mdr * VAT)
    row = {"SettlementDate": day.isoformat(), "TransactionDateTime": f"{p.time:%Y-%m-%d %H:%M:%S}",
           "MerchantID": MERCHANT, "StoreID": p.store, "MerchantInvoice": p.ref,
           "RefundInvoice": "", "OVOReferenceNo": p.ovo_ref, "TransactionType": "PAYMENT",
           "PaymentSource": SOURCES[p.option], "GrossAmount": f"{gross:.2f}",
           "MDRAmount": f"{mdr:.2f}", "TaxAmount": f"{tax:.2f}",
           "NetAmount": f"{gross - mdr - tax:.2f}"}
    row.update(changes)
    return row


def refund_row(day: dt.date, r: Refund, **changes: Any) -> dict[str, Any]:
    amount = changes.pop("amount", r.amount)
    row = {"SettlementDate": day.isoformat(), "TransactionDateTime": f"{r.time:%Y-%m-%d %H:%M:%S}",
           "MerchantID": MERCHANT, "StoreID": r.original.store,
           "MerchantInvoice": r.original.ref, "RefundInvoice": r.ref,
           "OVOReferenceNo": r.refund_no, "TransactionType": "REFUND",
           "PaymentSource": SOURCES[r.original.option], "GrossAmount": f"{-amount:.2f}",
           "MDRAmount": "0.00", "TaxAmount": "0.00", "NetAmount": f"{-amount:.2f}"}
    row.update(changes)
    return row


@dataclass
class DemoData:
    payments: list[Payment] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    files: dict[dt.date, list[dict[str, Any]]] = field(default_factory=dict)


class _Records:
    """New payments and refunds of the demo merchant, drawn from one random sequence (the
    samples and the demo's figures depend on the order of the draws)."""

    def __init__(self, rng: random.Random, data: DemoData) -> None:
        self.rng, self.data = rng, data
        self.counter = iter(range(1, 10_000_000))

    def payment(self, day: dt.date, status: str = "00") -> Payment:
        n = next(self.counter)
        moment = dt.datetime.combine(day, dt.time(), WIB) + dt.timedelta(
            seconds=self.rng.randrange(0, 86_400))
        p = Payment(ref=f"INV-{day:%Y%m%d}-{n:06d}", ovo_ref=f"OVO{n:010d}",
                    amount=Decimal(self.rng.randrange(10, 5000) * 500) / 1,
                    option=self.rng.choice(("OVO_CASH", "OVO_CASH", "OVO_POINTS")),
                    status=status, time=moment, store=f"ST{self.rng.randrange(1, 6):02d}")
        p.amount = _round(p.amount)
        self.data.payments.append(p)
        return p

    def refund(self, p: Payment, amount: Decimal, day: dt.date, status: str = "00") -> Refund:
        n = next(self.counter)
        moment = dt.datetime.combine(day, dt.time(10), WIB) + dt.timedelta(
            seconds=self.rng.randrange(0, 30_000))
        r = Refund(ref=f"RF-{n:06d}", original=p, refund_no=f"OVR{n:010d}", amount=amount,
                   time=moment, status=status)
        self.data.refunds.append(r)
        return r


def generate(per_day: int = 600, seed: int = 20261130) -> DemoData:
    """Records and the three settlement files, with every category planted."""
    calendar = WorkingCalendar()
    data = DemoData()
    records = _Records(random.Random(seed), data)
    # An old payment (for the D+60 window) and a week of traffic around the three dates.
    old = records.payment(dt.date(2026, 9, 1))
    by_day: dict[dt.date, list[Payment]] = {}
    day = dt.date(2026, 11, 25)
    while day <= dt.date(2026, 12, 1):
        by_day[day] = [records.payment(day) for _ in range(per_day)]
        day += dt.timedelta(days=1)

    for settlement in DEMO_DATES:
        covered = calendar.covered_dates(settlement)
        todays = [p for d in covered for p in by_day[d]]
        rows = _payment_rows(settlement, covered, todays, data)
        refund_day = covered[-1]
        previous = by_day[sorted(by_day)[DEMO_DATES.index(settlement)]]
        rows += _refund_rows(settlement, refund_day, previous, old, records)
        # TIMING_DIFFERENCE: a payment from an earlier covered window settled late.
        late_payment = by_day[min(by_day)][100 + DEMO_DATES.index(settlement)]
        rows.append(payment_row(settlement, late_payment))
        data.files[settlement] = rows + data.files[settlement]
        # DUPLICATE against an earlier settlement date: a row of the previous file again.
        if settlement != DEMO_DATES[0]:
            earlier = data.files[DEMO_DATES[DEMO_DATES.index(settlement) - 1]]
            data.files[settlement].append({**earlier[0], "SettlementDate": settlement.isoformat()})
    for settlement in DEMO_DATES:
        data.files[settlement].sort(key=lambda row: (row["TransactionDateTime"],
                                                     row["MerchantInvoice"]))
    return data


def _payment_rows(settlement: dt.date, covered: list[dt.date], todays: list[Payment],
                  data: DemoData) -> list[dict[str, Any]]:
    """A settlement date's payment rows, with the payments' problems planted: left out,
    settled though failed, amounts and fees off, a duplicate, an unknown payment, rows
    that cannot be read."""
    rows: list[dict[str, Any]] = []
    # MISSING_IN_SETTLEMENT: a few paid payments the file leaves out; the first two of
    # each date turn up in the next file (TIMING_DIFFERENCE, closing the open item).
    left_out = todays[:5]
    skip = {p.ref for p in left_out}
    data.files.setdefault(settlement, [])
    if settlement != DEMO_DATES[-1]:
        following = DEMO_DATES[DEMO_DATES.index(settlement) + 1]
        data.files.setdefault(following, [])
        data.files[following].extend(payment_row(following, p) for p in left_out[:2])
    # STATUS_MISMATCH: failed / cancelled payments that OVO settled anyway.
    for p, status in zip(todays[5:7], ("06", "05"), strict=True):
        p.status = status
    # AMOUNT_MISMATCH
    amount_off = {todays[7].ref: todays[7].amount + Decimal("1000.00"),
                  todays[8].ref: todays[8].amount - Decimal("0.01")}
    # FEE_MISMATCH: MDR charged at the wrong rate, and a net that does not add up.
    fee_off, net_off = todays[9].ref, todays[10].ref
    for p in todays:
        if p.ref in skip:
            continue
        if p.ref in amount_off:
            rows.append(payment_row(settlement, p, gross=amount_off[p.ref]))
        elif p.ref == fee_off:
            mdr = _round(p.amount * Decimal("0.02"))  # charged 2% instead of the contract
            tax = _round(mdr * VAT)
            rows.append(payment_row(settlement, p, MDRAmount=f"{mdr:.2f}",
                                    TaxAmount=f"{tax:.2f}",
                                    NetAmount=f"{p.amount - mdr - tax:.2f}"))
        elif p.ref == net_off:
            row = payment_row(settlement, p)
            row["NetAmount"] = f"{Decimal(row['NetAmount']) + Decimal('100.00'):.2f}"
            rows.append(row)
        else:
            rows.append(payment_row(settlement, p))
    # DUPLICATE_SETTLEMENT: a row repeated in the file.
    rows.append(dict(rows[20]))
    # MISSING_IN_RECORDS: a payment the merchant never recorded.
    ghost = Payment(ref=f"INV-UNKNOWN-{settlement:%Y%m%d}", ovo_ref="OVO9999999999",
                    amount=Decimal("75000.00"), option="OVO_CASH", status="00",
                    time=dt.datetime.combine(covered[0], dt.time(12), WIB), store="ST01")
    rows.append(payment_row(settlement, ghost))
    # INVALID_ROW: unreadable amount, unreadable time, empty invoice, unknown type.
    rows.append(payment_row(settlement, todays[30], MerchantInvoice="INV-BAD-AMOUNT",
                            GrossAmount="12.500,00"))
    rows.append(payment_row(settlement, todays[31], MerchantInvoice="INV-BAD-TIME",
                            TransactionDateTime="31/11/2026 25:00"))
    rows.append(payment_row(settlement, todays[32], MerchantInvoice=""))
    rows.append(payment_row(settlement, todays[33], MerchantInvoice="INV-BAD-TYPE",
                            TransactionType="CHARGEBACK"))
    return rows


def _refund_rows(settlement: dt.date, refund_day: dt.date, previous: list[Payment],
                 old: Payment, records: _Records) -> list[dict[str, Any]]:
    """A settlement date's refund rows: done refunds matched by RefundInvoice, a few by
    OVOReferenceNo only and by amount only, and the refunds' problems planted."""
    rows: list[dict[str, Any]] = []
    for p in previous[40:60]:
        r = records.refund(p, _round(p.amount / 2), refund_day)
        if p is previous[41]:
            rows.append(refund_row(settlement, r, RefundInvoice=""))  # by OVOReferenceNo
        elif p is previous[42]:
            rows.append(refund_row(settlement, r, RefundInvoice="", OVOReferenceNo=""))
        elif p is previous[43]:
            rows.append(refund_row(settlement, r, amount=r.amount + Decimal("500.00")))
        elif p is previous[44]:
            rows.append(refund_row(settlement, r, MDRAmount="-10.00", TaxAmount="-1.10",
                                   NetAmount=f"{-r.amount + Decimal('11.10'):.2f}"))
        elif p is previous[45]:
            continue  # left out: MISSING_IN_SETTLEMENT for the refund
        else:
            rows.append(refund_row(settlement, r))
    # STATUS_MISMATCH on a refund: recorded as failed, settled anyway.
    failed = records.refund(previous[60], _round(previous[60].amount / 4), refund_day, "06")
    rows.append(refund_row(settlement, failed))
    # REFUND_MISMATCH: refunds settled beyond the payment amount; refund past D+60.
    over = previous[61]
    first = records.refund(over, over.amount, refund_day)
    second = records.refund(over, _round(over.amount / 2), refund_day)
    rows.extend([refund_row(settlement, first), refund_row(settlement, second)])
    late = records.refund(old, _round(old.amount / 2), refund_day)
    rows.append(refund_row(settlement, late))
    # MISSING_IN_RECORDS for a refund: no refund record at all.
    rows.append(refund_row(settlement, Refund(
        ref=f"RF-GHOST-{settlement:%Y%m%d}", original=previous[62], refund_no="OVR000000000",
        amount=Decimal("1234.00"), time=dt.datetime.combine(refund_day, dt.time(9), WIB))))
    return rows


def write_demo(folder: Path, data: DemoData, xlsx_dates: tuple[dt.date, ...] = ()) -> Path:
    """Create the database, the inbox files and a configuration file; returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "recon.db"
    engine = make_engine(f"sqlite:///{db}")
    init_db(engine)
    insert_records(engine, [p.record() for p in data.payments],
                   [r.record() for r in data.refunds])
    engine.dispose()
    inbox = folder / "inbox"
    for day, rows in data.files.items():
        name = f"OVO_SETTLEMENT_{MERCHANT}_{day:%Y%m%d}"
        if day in xlsx_dates:
            write_settlement_xlsx(rows, inbox / f"{name}.xlsx")
        else:
            write_settlement_csv(rows, inbox / f"{name}.csv")
    config = folder / "recon.toml"
    config.write_text(
        "[recon]\n"
        f'merchant_id = "{MERCHANT}"\n'
        f'database_url = "sqlite:///{db}"\n'
        f'source = "{inbox}"\n'
        f'report_dir = "{folder / "reports"}"\n'
        f'outbox = "{folder / "outbox"}"\n'
        f'archive_dir = "{folder / "archive"}"\n'
        'mail_to = ["settlement-team@merchant.example"]\n'
        "[recon.mdr_rates]\n"
        '"OVO Cash" = "0.007"\n'
        '"OVO Points" = "0.005"\n'
    )
    return config


def run_demo(directory: str) -> int:
    from recon.app.runner import print_summary_table, run_dates

    folder = Path(directory).resolve()
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    data = generate()
    config = write_demo(folder, data, xlsx_dates=(DEMO_DATES[-1],))
    print(f"demo merchant {MERCHANT}: {len(data.payments):,} payments, "
          f"{len(data.refunds):,} refunds in {folder / 'recon.db'}; files in {folder / 'inbox'}")
    outcomes = run_dates({}, str(config), None, DEMO_DATES)
    for outcome in outcomes:
        print_summary_table(outcome["summary"], outcome["paths"])
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s; everything is under "
          f"{folder}")
    return 0
