"""FEE_MISMATCH: MDR, tax or net that disagree with the merchant's rates and OVO's rounding.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.core.fees import FeeRules
from recon.core.found import Evidence
from recon.core.money import format_amount, round_minor_array
from recon.core.reasons import Finding, percent_text

CATEGORY = cat.FEE_MISMATCH


def finding(given: Evidence) -> Finding:
    """The matched rows whose fees disagree (`fee_finding`)."""
    return fee_finding(given.out, given.found.matched, given.found.is_payment,
                       given.ctx.fee_rules)


def fee_finding(rows: pd.DataFrame, applies: pd.Series, is_payment: pd.Series,
                rules: FeeRules) -> Finding:
    """FEE_MISMATCH reasons, for the rows among those where `applies` whose fees disagree.

    Expected MDR and Tax are computed only for payment rows whose source has a contracted
    rate (MDR) or for every payment row (Tax); the Net arithmetic is checked on all rows.
    Computed on whole columns in exact integer arithmetic; texts only for the rows found.
    """
    tolerance = int(rules.tolerance * 100)
    if not applies.any():
        return Finding(np.zeros(0, dtype=np.intp), [])
    taken = applies.to_numpy(dtype=bool)
    # One column at a time, as integers; the payment source only as a mask per rate (a
    # million rows of it as Python strings were the match's largest allocation).
    gross, mdr, tax, net = (rows[name].to_numpy(dtype=np.int64, na_value=0)[taken]
                            for name in ("gross", "mdr", "tax", "net"))  # valid rows: none NA
    payment = is_payment.to_numpy(dtype=bool)[taken]
    source = rows["payment_source"]

    def off_rate(actual: np.ndarray, base: np.ndarray, mask: np.ndarray,
                 rate: Decimal) -> tuple[np.ndarray, np.ndarray]:
        """Positions where `actual` is further than the tolerance from rate × `base`
        (rounded by the rules), and the expected values there."""
        expected = round_minor_array(base[mask], rate, rules.rounding, rules.decimals)
        bad = np.abs(actual[mask] - expected) > tolerance
        return np.flatnonzero(mask)[bad], expected[bad]

    # Each check's texts by position among the rows taken: few rows have any.
    mdr_text: dict[int, str] = {}
    for name, rate in rules.mdr_rates.items():
        of_source = (source == name).to_numpy(dtype=bool)[taken]
        where, expected = off_rate(mdr, gross, payment & of_source, rate)
        mdr_text.update(zip(where.tolist(), [
            f"MDRAmount {format_amount(int(m))} ≠ {percent_text(rate)} of "
            f"{format_amount(int(g))} = {format_amount(int(e))}"
            for m, g, e in zip(mdr[where], gross[where], expected, strict=True)], strict=True))
    vat = rules.vat_rate
    where, expected = off_rate(tax, mdr, payment, vat)
    tax_text = dict(zip(where.tolist(), [
        f"TaxAmount {format_amount(int(t))} ≠ VAT {percent_text(vat)} of MDR "
        f"{format_amount(int(m))} = {format_amount(int(e))}"
        for t, m, e in zip(tax[where], mdr[where], expected, strict=True)], strict=True))
    where = np.flatnonzero(net != gross - mdr - tax)
    net_text = dict(zip(where.tolist(), [
        f"NetAmount {format_amount(int(n))} ≠ Gross − MDR − Tax = {format_amount(int(g - m - t))}"
        for n, g, m, t in zip(net[where], gross[where], mdr[where], tax[where], strict=True)],
        strict=True))
    found = sorted(mdr_text.keys() | tax_text.keys() | net_text.keys())
    return Finding(np.flatnonzero(taken)[np.array(found, dtype=np.intp)], [
        "; ".join(text for text in (mdr_text.get(i), tax_text.get(i), net_text.get(i)) if text)
        for i in found])
