"""REFUND_MISMATCH: a refund row whose amount, owner, cumulative total or timing disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.core.found import Evidence
from recon.core.reasons import Finding, all_that_hold


def refunded_before(prior: pd.DataFrame) -> dict[str, int]:
    """What earlier settlement dates refunded, per original payment."""
    prior_refunds = prior.loc[(prior["kind"] == cat.REFUND) & prior["amount"].notna()]
    return {str(k): int(v) for k, v in prior_refunds["amount"].astype("int64").abs()
            .groupby(prior_refunds["original_reference_no"]).sum().items()}


CATEGORY = cat.REFUND_MISMATCH


def finding(given: Evidence) -> Finding:
    """Refund rows whose amount, owner, cumulative total or timing disagree."""
    rows, checks, found = given.rows, given.checks, given.found
    before, window = given.refunded_before, given.ctx.refund_window_days
    ref_rows, ref_ok, gross = found.ref_rows, found.ref_ok, checks["gross"]
    # Settled refunds per payment: earlier dates plus every refund row of this file, so the
    # finding does not depend on the order of rows in the file.
    refund_invoices = rows.loc[ref_rows, "merchant_invoice"]
    in_file = gross.loc[ref_rows].astype("int64").abs().groupby(refund_invoices).sum()
    totals = in_file + pd.Series(before, dtype="int64").reindex(in_file.index, fill_value=0)
    cumulative = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    cumulative.loc[ref_rows] = totals.reindex(refund_invoices.to_numpy()).to_numpy(np.int64)
    checks["refunded_cumulative"] = cumulative
    # The days from payment to refund on the matched refund rows only: the dates are
    # objects, and making timestamps of every row's would cost more than all the checks.
    matched_refunds = np.flatnonzero(ref_ok.to_numpy(dtype=bool))
    days_after = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    days_after.iloc[matched_refunds] = (
        pd.to_datetime(checks["refund_date"].take(matched_refunds))
        - pd.to_datetime(checks["payment_date"].take(matched_refunds))).dt.days.to_numpy()
    checks["days_after"] = days_after
    # One list of (condition, reason): a row is flagged where any condition holds, and its
    # reason says each that holds, so the rule cannot find a row it does not explain.
    return all_that_hold(checks, [
        (ref_ok & (gross.abs() != checks["refund_amount"]).fillna(True).astype(bool),
         lambda c: ["refund amount ", c.amount("gross", absolute=True), " ≠ refund record ",
                    c.amount("refund_amount")]),
        (ref_ok & (checks["refund_original"] != checks["merchant_invoice"]),
         lambda c: ["refund record ", c.text("refund_record"), " belongs to payment ",
                    c.text("refund_original"), ", not ", c.text("merchant_invoice")]),
        (ref_ok & (cumulative > checks["payment_amount"]).fillna(False).astype(bool),
         lambda c: ["refunds settled for ", c.text("merchant_invoice"), " total ",
                    c.amount("refunded_cumulative"), ", more than the payment ",
                    c.amount("payment_amount")]),
        (ref_ok & (days_after > window).fillna(False).astype(bool),
         lambda c: ["refund ", c.per_value("days_after", str),
                    f" days after the payment (window {window} days)"]),
    ])
