"""STATUS_MISMATCH: a settled row whose record is not in a settled state.
"""

from __future__ import annotations

from recon.core import categories as cat
from recon.core.found import Evidence
from recon.core.reasons import Finding, all_that_hold

CATEGORY = cat.STATUS_MISMATCH


def finding(given: Evidence) -> Finding:
    checks, found = given.checks, given.found
    payment_unpaid = ~checks["payment_status"].isin(cat.PAID_STATUSES)
    refund_undone = ~checks["refund_status"].isin(cat.DONE_REFUND_STATUSES)
    return all_that_hold(checks, [
        (found.pay_ok & payment_unpaid,
         lambda c: ["payment status ", c.per_value("payment_status", cat.status_label),
                    ", expected 00 Success or 04 Refunded"]),
        (found.ref_ok & refund_undone,
         lambda c: ["refund status ", c.per_value("refund_status", cat.status_label),
                    ", expected 00 Success"]),
        (found.ref_ok & ~refund_undone & payment_unpaid,
         lambda c: ["original payment status ",
                    c.per_value("payment_status", cat.status_label)]),
    ])
