"""AMOUNT_MISMATCH: a matched payment row whose gross is not the payment's amount.
"""

from __future__ import annotations

from recon.core import categories as cat
from recon.core.found import Evidence
from recon.core.reasons import Finding, all_that_hold

CATEGORY = cat.AMOUNT_MISMATCH


def finding(given: Evidence) -> Finding:
    checks = given.checks
    return all_that_hold(checks, [
        (given.found.pay_ok & (checks["gross"] != checks["payment_amount"]).fillna(False)
         .astype(bool),
         lambda c: ["GrossAmount ", c.amount("gross"), " ≠ payment amount ",
                    c.amount("payment_amount"), " (delta ", c.amount("delta"), ")"]),
    ])
