"""Truth tables for each rule of the matching engine (pure: frames in, result out)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from recon.core import categories as cat
from recon.core.fees import FeeRules
from recon.core.match import match_settlement
from tests.builders import (
    context,
    fees,
    ledger_frame,
    open_items_frame,
    payment_row,
    payments_frame,
    refund_row,
    refunds_frame,
    rows_frame,
)

D = dt.date
EMPTY_LEDGER = ledger_frame([])
NO_OPEN = open_items_frame([])
PAID = ("INV-1", "10000.00", "00", "2026-11-27 10:00:00")


def classify(rows: list[dict[str, Any]], payments: list[tuple] = (PAID,),
             refunds: list[tuple] = (), ledger: pd.DataFrame = EMPTY_LEDGER,
             open_items: pd.DataFrame = NO_OPEN, **ctx: Any):
    return match_settlement(rows_frame(rows), payments_frame(list(payments)),
                            refunds_frame(list(refunds)), ledger, open_items, context(**ctx))


# ---------------------------------------------------------------- payment rows, one rule each
PAYMENT_TABLE = [
    # (label, row, record status, record amount, record time, expected)
    ("agrees", payment_row("INV-1", "10000.00"), "00", "10000.00", "2026-11-27 10:00", cat.MATCHED),
    ("refunded counts as paid", payment_row("INV-1", "10000.00"), "04", "10000.00",
     "2026-11-27 10:00", cat.MATCHED),
    ("no such payment", payment_row("INV-X", "10000.00"), "00", "10000.00", "2026-11-27 10:00",
     cat.MISSING_IN_RECORDS),
    ("failed payment", payment_row("INV-1", "10000.00"), "06", "10000.00", "2026-11-27 10:00",
     cat.STATUS_MISMATCH),
    ("canceled payment", payment_row("INV-1", "10000.00"), "05", "10000.00", "2026-11-27 10:00",
     cat.STATUS_MISMATCH),
    ("pending payment", payment_row("INV-1", "10000.00"), "03", "10000.00", "2026-11-27 10:00",
     cat.STATUS_MISMATCH),
    ("one sen more", payment_row("INV-1", "10000.01"), "00", "10000.00", "2026-11-27 10:00",
     cat.AMOUNT_MISMATCH),
    ("one sen less", payment_row("INV-1", "9999.99"), "00", "10000.00", "2026-11-27 10:00",
     cat.AMOUNT_MISMATCH),
    ("record from an earlier window", payment_row("INV-1", "10000.00"), "00", "10000.00",
     "2026-11-26 23:59:59", cat.TIMING_DIFFERENCE),
    ("record on the settlement day itself", payment_row("INV-1", "10000.00"), "00", "10000.00",
     "2026-11-30 00:00:00", cat.TIMING_DIFFERENCE),
    ("first second of the window", payment_row("INV-1", "10000.00"), "00", "10000.00",
     "2026-11-27 00:00:00", cat.MATCHED),
    ("last second of the window", payment_row("INV-1", "10000.00"), "00", "10000.00",
     "2026-11-29 23:59:59", cat.MATCHED),
    ("MDR at the wrong rate", payment_row("INV-1", "10000.00", mdr="100.00", tax="11.00",
                                          net="9889.00"), "00", "10000.00", "2026-11-27 10:00",
     cat.FEE_MISMATCH),
    ("MDR one sen off is within tolerance", payment_row("INV-1", "10000.00", mdr="70.01",
                                                        tax="7.70", net="9922.29"),
     "00", "10000.00", "2026-11-27 10:00", cat.MATCHED),
    ("MDR two sen off", payment_row("INV-1", "10000.00", mdr="70.02", tax="7.70",
                                    net="9922.28"), "00", "10000.00", "2026-11-27 10:00",
     cat.FEE_MISMATCH),
    ("VAT wrong", payment_row("INV-1", "10000.00", mdr="70.00", tax="10.00", net="9920.00"),
     "00", "10000.00", "2026-11-27 10:00", cat.FEE_MISMATCH),
    ("net does not add up", payment_row("INV-1", "10000.00", net="9922.31"), "00", "10000.00",
     "2026-11-27 10:00", cat.FEE_MISMATCH),
    ("status beats amount", payment_row("INV-1", "5.00"), "06", "10000.00", "2026-11-27 10:00",
     cat.STATUS_MISMATCH),
    ("amount beats timing", payment_row("INV-1", "5.00"), "00", "10000.00", "2026-11-20 10:00",
     cat.AMOUNT_MISMATCH),
    ("timing beats fee", payment_row("INV-1", "10000.00", net="1.00"), "00", "10000.00",
     "2026-11-20 10:00", cat.TIMING_DIFFERENCE),
    ("unreadable beats everything", payment_row("INV-1", "10000.00",
                                                invalid_reason="GrossAmount 'x' is not a decimal"),
     "06", "1.00", "2026-11-20 10:00", cat.INVALID_ROW),
]


@pytest.mark.parametrize(("label", "row", "status", "amount", "time", "expected"), PAYMENT_TABLE,
                         ids=[t[0] for t in PAYMENT_TABLE])
def test_payment_rules(label: str, row: dict, status: str, amount: str, time: str,
                       expected: str) -> None:
    result = classify([row], payments=[("INV-1", amount, status, time)])
    assert result.rows["category"].tolist() == [expected], result.rows["reason"].tolist()
    if expected != cat.MATCHED:
        assert result.rows["reason"].iloc[0]


def test_mdr_check_is_off_without_a_rate() -> None:
    row = payment_row("INV-1", "10000.00", mdr="500.00", tax="55.00", net="9445.00")
    assert classify([row], rates={}).rows["category"].tolist() == [cat.MATCHED]


def test_fee_reason_names_rate_and_expected_amount() -> None:
    row = payment_row("INV-1", "10000.00", mdr="100.00", tax="11.00", net="9889.00")
    result = classify([row], rates={"OVO_CASH": Decimal("0.005")})
    assert result.rows["reason"].iloc[0] == "MDRAmount 100.00 ≠ 0.5% of 10000.00 = 50.00"


def test_fee_rounding_half_up_and_configurable() -> None:
    # 0.7% of 10,075.00 = 70.525 -> 70.53 (half up); 11% of 70.53 = 7.7583 -> 7.76
    row = payment_row("INV-1", "10075.00", mdr="70.53", tax="7.76", net="9996.71")
    payments = [("INV-1", "10075.00", "00", "2026-11-27 10:00")]
    assert classify([row], payments=payments).rows["category"].tolist() == [cat.MATCHED]
    # With no tolerance, half-even rounding expects 70.52 and flags the row.
    strict = dataclasses.replace(context(), fee_rules=FeeRules(
        mdr_rates={"OVO_CASH": Decimal("0.007")}, tolerance=Decimal("0"), rounding="half_even"))
    result = match_settlement(rows_frame([row]), payments_frame(payments), refunds_frame([]),
                              EMPTY_LEDGER, NO_OPEN, strict)
    assert result.rows["reason"].tolist() == ["MDRAmount 70.53 ≠ 0.7% of 10075.00 = 70.52"]


def test_fees_rounded_a_block_at_a_time_find_and_total_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Millions of values are rounded a block at a time (`round_minor_array`): blocks of
    two give the same findings, texts and records' totals as one block."""
    rates = {"OVO_CASH": Decimal("0.007"), "OVO_POINTS": Decimal("0.005")}
    rows, payments = [], []
    for i, (gross, mdr, tax) in enumerate([("10075.00", "70.53", "7.76"),
                                           ("10000.00", "100.00", "11.00"),  # MDR off
                                           ("20000.00", "140.00", "1.00"),  # tax off
                                           ("333.33", "2.33", "0.26"),
                                           ("5000.00", "25.00", "2.75")]):
        source = "OVO_POINTS" if i == 4 else "OVO_CASH"
        net = str(Decimal(gross) - Decimal(mdr) - Decimal(tax) - (1 if i == 3 else 0))
        rows.append(payment_row(f"INV-{i}", gross, mdr=mdr, tax=tax, net=net,
                                payment_source=source))
        payments.append((f"INV-{i}", gross, "00", "2026-11-27 10:00:00"))
    whole = classify(rows, payments=payments, rates=rates)
    monkeypatch.setattr("recon.core.money.ROUND_BLOCK_ROWS", 2)
    blocks = classify(rows, payments=payments, rates=rates)
    assert whole.rows["category"].tolist() == [cat.MATCHED, cat.FEE_MISMATCH,
                                               cat.FEE_MISMATCH, cat.FEE_MISMATCH,
                                               cat.MATCHED]
    pd.testing.assert_frame_equal(blocks.rows[["category", "reason", "flags"]],
                                  whole.rows[["category", "reason", "flags"]])
    assert blocks.record_totals == whole.record_totals
    # The records' payments are all OVO Cash (0.7%), whatever the file says.
    assert whole.record_totals["mdr"] == 7053 + 7000 + 14000 + 233 + 3500


def test_lower_findings_become_flags() -> None:
    row = payment_row("INV-1", "5.00", net="1.00")
    result = classify([row], payments=[("INV-1", "10000.00", "00", "2026-11-20 10:00")])
    flags = result.rows["flags"].iloc[0]
    assert result.rows["category"].iloc[0] == cat.AMOUNT_MISMATCH
    assert "TIMING_DIFFERENCE" in flags and "FEE_MISMATCH" in flags


# ---------------------------------------------------------------- duplicates
def test_duplicate_in_the_same_file_first_is_judged_normally() -> None:
    rows = [payment_row("INV-1", "10000.00"), payment_row("INV-1", "10000.00")]
    result = classify(rows)
    assert result.rows["category"].tolist() == [cat.MATCHED, cat.DUPLICATE_SETTLEMENT]
    assert "line 2 of this file" in result.rows["reason"].iloc[1]
    assert len(result.ledger) == 1


def test_duplicate_of_an_earlier_settlement_date() -> None:
    ledger = ledger_frame([(D(2026, 11, 27), "PAYMENT", "INV-1", "INV-1", "INV-1", "10000.00")])
    result = classify([payment_row("INV-1", "10000.00")], ledger=ledger)
    assert result.rows["category"].tolist() == [cat.DUPLICATE_SETTLEMENT]
    assert "already settled on 2026-11-27" in result.rows["reason"].iloc[0]


def test_a_later_settlement_date_is_not_a_duplicate() -> None:
    ledger = ledger_frame([(D(2026, 12, 1), "PAYMENT", "INV-1", "INV-1", "INV-1", "10000.00")])
    result = classify([payment_row("INV-1", "10000.00")], ledger=ledger)
    assert result.rows["category"].tolist() == [cat.MATCHED]


def test_unreadable_rows_do_not_make_duplicates() -> None:
    rows = [payment_row("INV-1", "10000.00", invalid_reason="bad"),
            payment_row("INV-1", "10000.00")]
    assert classify(rows).rows["category"].tolist() == [cat.INVALID_ROW, cat.MATCHED]


def test_refund_duplicates_use_refund_invoice_else_ovo_reference() -> None:
    refunds = [("RF-1", "INV-1", "OVR-1", "1000.00", "00", "2026-11-28 10:00")]
    rows = [refund_row("INV-1", "1000.00", "RF-1", "OVR-1"),
            refund_row("INV-1", "1000.00", "RF-1", "OVR-9"),
            refund_row("INV-1", "1000.00", "", "OVR-7"),
            refund_row("INV-1", "1000.00", "", "OVR-7")]
    result = classify(rows, refunds=refunds)
    assert result.rows["category"].tolist()[:2] == [cat.MATCHED, cat.DUPLICATE_SETTLEMENT]
    assert result.rows["category"].iloc[3] == cat.DUPLICATE_SETTLEMENT


# ---------------------------------------------------------------- refunds
REFUNDS = [
    ("RF-1", "INV-1", "OVR-1", "3000.00", "00", "2026-11-28 10:00"),
    ("RF-2", "INV-1", "OVR-2", "2000.00", "00", "2026-11-28 11:00"),
    ("RF-3", "INV-1", "OVR-3", "1000.00", "06", "2026-11-28 12:00"),
]

REFUND_TABLE = [
    ("by RefundInvoice", refund_row("INV-1", "3000.00", "RF-1", "x"), cat.MATCHED, "RF-1"),
    ("by OVOReferenceNo", refund_row("INV-1", "2000.00", "", "OVR-2"), cat.MATCHED, "RF-2"),
    ("unknown RefundInvoice falls back to OVOReferenceNo",
     refund_row("INV-1", "2000.00", "RF-404", "OVR-2"), cat.MATCHED, "RF-2"),
    ("by payment and amount", refund_row("INV-1", "2000.00", "", ""), cat.MATCHED, "RF-2"),
    ("amount differs from the record", refund_row("INV-1", "2500.00", "RF-1"),
     cat.REFUND_MISMATCH, "RF-1"),
    ("failed refund settled", refund_row("INV-1", "1000.00", "RF-3"), cat.STATUS_MISMATCH,
     "RF-3"),
    ("no refund record", refund_row("INV-1", "777.00", "RF-404", "OVR-404"),
     cat.MISSING_IN_RECORDS, ""),
    ("no payment to refund", refund_row("INV-404", "3000.00", "RF-1"), cat.MISSING_IN_RECORDS,
     "RF-1"),
    ("refund record of another payment", refund_row("INV-2", "3000.00", "RF-1"),
     cat.REFUND_MISMATCH, "RF-1"),
    ("refund net does not add up", refund_row("INV-1", "3000.00", "RF-1", net="-2990.00"),
     cat.FEE_MISMATCH, "RF-1"),
    ("reversed fees are fine on refunds", refund_row("INV-1", "3000.00", "RF-1", mdr="-21.00",
                                                     tax="-2.31", net="-2976.69"),
     cat.MATCHED, "RF-1"),
]


@pytest.mark.parametrize(("label", "row", "expected", "record"), REFUND_TABLE,
                         ids=[t[0] for t in REFUND_TABLE])
def test_refund_rules(label: str, row: dict, expected: str, record: str) -> None:
    payments = [PAID, ("INV-2", "50000.00", "00", "2026-11-27 11:00")]
    result = classify([row], payments=payments, refunds=REFUNDS)
    assert result.rows["category"].tolist() == [expected], result.rows["reason"].tolist()
    assert result.rows["refund_record"].iloc[0] == record


def test_amount_fallback_prefers_done_refunds_then_the_earliest() -> None:
    refunds = [("RF-A", "INV-1", "", "500.00", "06", "2026-11-28 08:00"),
               ("RF-B", "INV-1", "", "500.00", "00", "2026-11-28 10:00"),
               ("RF-C", "INV-1", "", "500.00", "00", "2026-11-28 09:00")]
    rows = [refund_row("INV-1", "500.00"), refund_row("INV-1", "500.00"),
            refund_row("INV-1", "500.00")]
    result = classify(rows, refunds=refunds)
    assert result.rows["refund_record"].tolist() == ["RF-C", "RF-B", "RF-A"]
    assert result.rows["category"].tolist() == [cat.MATCHED, cat.MATCHED, cat.STATUS_MISMATCH]


def test_refunds_exceeding_the_payment_across_dates() -> None:
    ledger = ledger_frame([(D(2026, 11, 27), "REFUND", "RF-0", "RF-0", "INV-1", "6000.00")])
    refunds = [("RF-0", "INV-1", "", "6000.00", "00", "2026-11-26 10:00"), *REFUNDS[:2]]
    rows = [refund_row("INV-1", "3000.00", "RF-1"), refund_row("INV-1", "2000.00", "RF-2")]
    result = classify(rows, refunds=refunds, ledger=ledger)
    # 6,000 earlier + 3,000 + 2,000 now = 11,000 > 10,000: both rows of this file are flagged,
    # whatever their order; a file that stays within the amount is not.
    assert result.rows["category"].tolist() == [cat.REFUND_MISMATCH, cat.REFUND_MISMATCH]
    assert "total 11000.00, more than the payment 10000.00" in result.rows["reason"].iloc[1]
    within = classify(rows[:1], refunds=refunds, ledger=ledger)
    assert within.rows["category"].tolist() == [cat.MATCHED]


@pytest.mark.parametrize(("refund_day", "expected"), [
    ("2026-11-29 23:59:59", cat.MATCHED),  # D+60 from 2026-09-30 is allowed
    ("2026-11-29 10:00:00", cat.MATCHED),
])
def test_refund_window_edge(refund_day: str, expected: str) -> None:
    payments = [("INV-1", "10000.00", "00", "2026-09-30 10:00")]
    refunds = [("RF-1", "INV-1", "", "100.00", "00", refund_day)]
    result = classify([refund_row("INV-1", "100.00", "RF-1")], payments=payments,
                      refunds=refunds)
    assert result.rows["category"].tolist() == [expected]


def test_refund_past_the_window() -> None:
    payments = [("INV-1", "10000.00", "00", "2026-09-29 10:00")]
    refunds = [("RF-1", "INV-1", "", "100.00", "00", "2026-11-29 10:00")]
    result = classify([refund_row("INV-1", "100.00", "RF-1")], payments=payments,
                      refunds=refunds)
    assert result.rows["category"].tolist() == [cat.REFUND_MISMATCH]
    assert "61 days after the payment (window 60 days)" in result.rows["reason"].iloc[0]
    shorter = classify([refund_row("INV-1", "100.00", "RF-1")], payments=payments,
                       refunds=refunds, window=90)
    assert shorter.rows["category"].tolist() == [cat.MATCHED]


def test_refund_timing_uses_refund_time() -> None:
    refunds = [("RF-1", "INV-1", "", "100.00", "00", "2026-11-25 10:00")]
    result = classify([refund_row("INV-1", "100.00", "RF-1")], refunds=refunds)
    assert result.rows["category"].tolist() == [cat.TIMING_DIFFERENCE]


# ---------------------------------------------------------------- missing in settlement
def test_missing_in_settlement_only_paid_and_covered() -> None:
    payments = [
        ("P-PAID", "100.00", "00", "2026-11-28 10:00"),
        ("P-REFUNDED", "200.00", "04", "2026-11-29 23:59:59"),
        ("P-FAILED", "300.00", "06", "2026-11-28 10:00"),
        ("P-PENDING", "400.00", "03", "2026-11-28 10:00"),
        ("P-TODAY", "500.00", "00", "2026-11-30 00:00:00"),
        ("P-BEFORE", "600.00", "00", "2026-11-26 23:59:59"),
        ("P-SETTLED", "700.00", "00", "2026-11-27 10:00"),
        ("P-EARLIER", "800.00", "00", "2026-11-27 11:00"),
    ]
    refunds = [("RF-DONE", "P-SETTLED", "", "50.00", "00", "2026-11-28 10:00"),
               ("RF-FAILED", "P-SETTLED", "", "60.00", "06", "2026-11-28 10:00")]
    ledger = ledger_frame([(D(2026, 11, 27), "PAYMENT", "P-EARLIER", "P-EARLIER", "P-EARLIER",
                            "800.00")])
    result = classify([payment_row("P-SETTLED", "700.00")], payments=payments, refunds=refunds,
                      ledger=ledger)
    missing = result.missing
    assert sorted(missing["record_key"]) == ["P-PAID", "P-REFUNDED", "RF-DONE"]
    assert result.counts[cat.MISSING_IN_SETTLEMENT] == 3
    assert result.amounts[cat.MISSING_IN_SETTLEMENT] == 10_000 + 20_000 - 5_000


def test_open_items_close_and_age() -> None:
    payments = [("P-OLD", "100.00", "00", "2026-11-20 10:00"),
                ("P-OLDER", "100.00", "00", "2026-11-19 10:00")]
    items = open_items_frame([(1, D(2026, 11, 23), "PAYMENT", "P-OLD", "100.00"),
                              (2, D(2026, 11, 20), "PAYMENT", "P-OLDER", "100.00")])
    result = classify([payment_row("P-OLD", "100.00", mdr="0.70", tax="0.08", net="99.22")],
                      payments=payments, open_items=items)
    assert result.rows["category"].tolist() == [cat.TIMING_DIFFERENCE]
    assert result.closures["exception_id"].tolist() == [1]
    assert result.closures["line_no"].tolist() == [2]
    assert result.rows["reason"].iloc[0].endswith(
        "closes the MISSING_IN_SETTLEMENT item of 2026-11-23")
    assert result.open_items["record_key"].tolist() == ["P-OLDER"]
    # 2026-11-20 -> 2026-11-30: 23, 24, 25, 26, 27, 30 November
    assert result.open_items["age_working_days"].tolist() == [6]


def test_rerun_of_an_old_date_marks_items_settled_later() -> None:
    payments = [("P-1", "100.00", "00", "2026-11-28 10:00")]
    ledger = ledger_frame([(D(2026, 12, 1), "PAYMENT", "P-1", "P-1", "P-1", "100.00")])
    result = classify([], payments=payments, ledger=ledger)
    assert result.missing["closed_by_date"].tolist() == [D(2026, 12, 1)]
    assert result.counts[cat.MISSING_IN_SETTLEMENT] == 1


def test_every_row_gets_exactly_one_category_and_totals() -> None:
    rows = [payment_row("INV-1", "10000.00"), payment_row("INV-X", "1.00"),
            payment_row("INV-1", "10000.00"), refund_row("INV-1", "3000.00", "RF-1"),
            payment_row("INV-Y", "2.00", invalid_reason="bad")]
    result = classify(rows, refunds=REFUNDS)
    assert sum(v for k, v in result.counts.items() if k != cat.MISSING_IN_SETTLEMENT) == 5
    assert result.totals["gross"] == 1_000_000 + 100 + 1_000_000 - 300_000 + 200
    assert result.amounts[cat.MATCHED] == 1_000_000 - 300_000
    assert set(result.counts) == set(cat.ALL_CATEGORIES)
    assert Decimal(fees("10000.00")["net"]) == Decimal("9922.30")


def test_each_row_says_how_its_record_was_found() -> None:
    rows = [payment_row("INV-1", "10000.00"), payment_row("INV-X", "1.00"),
            refund_row("INV-1", "3000.00", "RF-1"), refund_row("INV-1", "2000.00", "", "OVR-2"),
            refund_row("INV-1", "1000.00", "", "")]
    result = classify(rows, refunds=REFUNDS)
    assert result.rows["match_rule"].tolist() == [
        "MerchantInvoice", "", "RefundInvoice", "OVOReferenceNo", "payment and amount"]


def test_the_reason_texts_of_missing_records_status_amount_and_timing() -> None:
    """Each reason as the finance team reads it, word for word (built column-wise)."""
    payments = [("INV-1", "10000.00", "00", "2026-11-27 10:00:00"),
                ("INV-2", "500.00", "06", "2026-11-27 11:00:00"),
                ("INV-3", "700.00", "00", "2026-11-27 12:00:00"),
                ("INV-4", "900.00", "00", "2026-11-26 09:00:00"),
                ("INV-5", "800.00", "XX", "2026-11-27 12:00:00")]
    refunds = [("RF-9", "INV-1", "OVR-9", "100.00", "06", "2026-11-28 10:00"),
               ("RF-8", "INV-5", "OVR-8", "50.00", "00", "2026-11-28 10:00")]
    rows = [payment_row("GHOST-1", "10.00"), refund_row("GHOST-2", "12.50", "RF-G"),
            refund_row("INV-1", "12.50", "RF-X", "OVR-X"),
            refund_row("INV-3", "7.05", "", "OVR-Y"),
            refund_row("INV-3", "7.05", ovo_reference_no=""),
            payment_row("INV-2", "500.00"), refund_row("INV-1", "100.00", "RF-9"),
            refund_row("INV-5", "50.00", "RF-8"), payment_row("INV-3", "700.01"),
            payment_row("INV-4", "900.00")]
    result = classify(rows, payments=payments, refunds=refunds)
    assert list(zip(result.rows["category"], result.rows["reason"], strict=True)) == [
        (cat.MISSING_IN_RECORDS, "no payment with partnerReferenceNo GHOST-1"),
        (cat.MISSING_IN_RECORDS, "no payment GHOST-2 to refund"),
        (cat.MISSING_IN_RECORDS, "no refund record for RefundInvoice RF-X, OVOReferenceNo "
                                 "OVR-X, nor an unmatched refund of 12.50 on payment INV-1"),
        (cat.MISSING_IN_RECORDS, "no refund record for OVOReferenceNo OVR-Y, nor an "
                                 "unmatched refund of 7.05 on payment INV-3"),
        (cat.MISSING_IN_RECORDS, "no refund record for nor an unmatched refund of 7.05 on "
                                 "payment INV-3"),
        (cat.STATUS_MISMATCH, "payment status 06 Failed, expected 00 Success or 04 Refunded"),
        (cat.STATUS_MISMATCH, "refund status 06 Failed, expected 00 Success"),
        (cat.STATUS_MISMATCH, "original payment status 'XX'"),
        (cat.AMOUNT_MISMATCH, "GrossAmount 700.01 ≠ payment amount 700.00 (delta 0.01)"),
        (cat.TIMING_DIFFERENCE, "record date 2026-11-26 is covered by settlement date "
                                "2026-11-27, not 2026-11-30"),
    ]
