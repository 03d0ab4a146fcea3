"""The reconciliation categories, in precedence order (SPEC section 5)."""

from __future__ import annotations

INVALID_ROW = "INVALID_ROW"
DUPLICATE_SETTLEMENT = "DUPLICATE_SETTLEMENT"
MISSING_IN_RECORDS = "MISSING_IN_RECORDS"
STATUS_MISMATCH = "STATUS_MISMATCH"
AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
REFUND_MISMATCH = "REFUND_MISMATCH"
TIMING_DIFFERENCE = "TIMING_DIFFERENCE"
FEE_MISMATCH = "FEE_MISMATCH"
MATCHED = "MATCHED"
MISSING_IN_SETTLEMENT = "MISSING_IN_SETTLEMENT"

#: Categories a settlement row can get, first applicable wins.
ROW_CATEGORIES = (
    INVALID_ROW,
    DUPLICATE_SETTLEMENT,
    MISSING_IN_RECORDS,
    STATUS_MISMATCH,
    AMOUNT_MISMATCH,
    REFUND_MISMATCH,
    TIMING_DIFFERENCE,
    FEE_MISMATCH,
    MATCHED,
)

#: Every category, as summary.json and the workbook list them.
ALL_CATEGORIES = (*ROW_CATEGORIES, MISSING_IN_SETTLEMENT)

#: Categories that are exceptions (everything but MATCHED).
EXCEPTION_CATEGORIES = tuple(c for c in ALL_CATEGORIES if c != MATCHED)

PAYMENT = "PAYMENT"
REFUND = "REFUND"

PAID_STATUSES = frozenset({"00", "04"})
DONE_REFUND_STATUSES = frozenset({"00"})

SNAP_STATUS_NAMES = {
    "00": "Success",
    "01": "Initiated",
    "02": "Paying",
    "03": "Pending",
    "04": "Refunded",
    "05": "Canceled",
    "06": "Failed",
    "07": "Not found",
}


def status_label(code: str) -> str:
    name = SNAP_STATUS_NAMES.get(code)
    return f"{code} {name}" if name else repr(code)
