"""MISSING_IN_RECORDS: a settled row whose payment or refund the merchant has no record of.
"""

from __future__ import annotations

from recon.core import categories as cat
from recon.core.found import Evidence
from recon.core.reasons import Finding, all_that_hold

CATEGORY = cat.MISSING_IN_RECORDS


def finding(given: Evidence) -> Finding:
    checks, found = given.checks, given.found
    missing_payment = found.settled & ~found.found_payment
    return all_that_hold(checks, [
        (found.pay_rows & missing_payment,
         lambda c: ["no payment with partnerReferenceNo ", c.text("merchant_invoice")]),
        (found.ref_rows & missing_payment,
         lambda c: ["no payment ", c.text("merchant_invoice"), " to refund"]),
        (found.ref_rows & found.found_payment & ~found.found_refund,
         lambda c: ["no refund record for ", c.labelled("RefundInvoice ", "refund_invoice"),
                    c.labelled("OVOReferenceNo ", "ovo_reference_no"),
                    "nor an unmatched refund of ", c.amount("gross", absolute=True),
                    " on payment ", c.text("merchant_invoice")]),
    ])
