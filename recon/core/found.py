"""What each settlement row found among the records: its payment, its refund record (and
by which rule), whether it is settled or a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.core.duplicates import duplicate_reasons
from recon.core.reasons import pick, text_column
from recon.core.result import MatchContext
from recon.core.schemas import positions_in, text_array, text_isin


def match_refunds(
    rows: pd.DataFrame, settled_refund: pd.Series, refunds: pd.DataFrame, taken: set[str]
) -> tuple[pd.Series, pd.Series]:
    """Refund record (partner_refund_no) and the rule that found it, per refund row.

    RefundInvoice = partner_refund_no, else OVOReferenceNo = refund_no, else the earliest
    unmatched refund of the same payment with the same amount (done refunds first).
    """
    if not settled_refund.any() or refunds.empty:
        nothing = text_column(rows.index, np.zeros(0, dtype=np.intp), [])
        return nothing, nothing
    by_refund_no = refunds.loc[refunds["refund_no"] != ""].drop_duplicates("refund_no")
    by_refund_no = by_refund_no.set_index("refund_no")["partner_refund_no"]
    wanted = settled_refund.to_numpy(dtype=bool)
    invoice = rows["refund_invoice"]
    ovo_ref = rows["ovo_reference_no"]
    by_invoice = wanted & (invoice != "").to_numpy() & text_isin(
        invoice, refunds["partner_refund_no"]).to_numpy()
    by_ovo = wanted & ~by_invoice & (ovo_ref != "").to_numpy() & text_isin(
        ovo_ref, by_refund_no.index.to_series()).to_numpy()
    # Python objects only for the refund rows, not for every row of three columns (at 10M
    # rows, thirty million strings and numbers).
    at = [np.flatnonzero(by_invoice), np.flatnonzero(by_ovo)]
    keys: list[str] = invoice.take(at[0]).tolist()
    keys += by_refund_no.reindex(ovo_ref.take(at[1]).tolist()).tolist()
    rules = ["RefundInvoice"] * len(at[0]) + ["OVOReferenceNo"] * len(at[1])

    unmatched = np.flatnonzero(wanted & ~by_invoice & ~by_ovo)
    if len(unmatched):
        claimed = set(taken) | set(keys)
        invoices = rows["merchant_invoice"].take(unmatched).tolist()
        grosses = rows["gross"].take(unmatched).tolist()
        pool = refunds.loc[refunds["original_partner_reference_no"].isin(set(invoices))]
        pool = pool.assign(
            _pending=~pool["status"].isin(cat.DONE_REFUND_STATUSES)
        ).sort_values(["_pending", "refund_time", "partner_refund_no"], na_position="last")
        by_payment: dict[tuple[str, int], list[str]] = {}
        for key, original, amount in zip(
            pool["partner_refund_no"], pool["original_partner_reference_no"],
            pool["refund_amount"], strict=True,
        ):
            if not pd.isna(amount):
                by_payment.setdefault((original, int(amount)), []).append(key)
        by_amount = []
        for position, paid, gross in zip(unmatched.tolist(), invoices, grosses, strict=True):
            for key in by_payment.get((paid, abs(int(gross))), []):
                if key not in claimed:
                    by_amount.append(position)
                    keys.append(key)
                    claimed.add(key)
                    break
        at.append(np.array(by_amount, dtype=np.intp))
        rules += ["payment and amount"] * len(by_amount)
    positions = np.concatenate(at)
    return text_column(rows.index, positions, keys), text_column(rows.index, positions, rules)


def aligned(keys: pd.Series, table: pd.DataFrame, key: str,
             columns: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """`table`'s `columns` for each of `keys`, from the first row with that key (missing
    values where there is none), where one was found, and its position in `table` (-1
    where none): one Arrow lookup instead of a drop_duplicates, an isin and a reindex."""
    found, take = positions_in(text_array(keys), text_array(table[key]))
    return pd.DataFrame({name: table[name].array.take(take, allow_fill=True)
                         for name in columns}, index=keys.index), found, take


def refund_keys(rows: pd.DataFrame) -> pd.Series:
    """The key a refund row settles: its RefundInvoice, else its OVOReferenceNo."""
    return pick(rows["refund_invoice"] != "", rows["refund_invoice"], rows["ovo_reference_no"])


def settle_keys(rows: pd.DataFrame) -> pd.Series:
    is_payment = rows["transaction_type"] == cat.PAYMENT
    return pick(is_payment, rows["merchant_invoice"], refund_keys(rows))


@dataclass(frozen=True)
class FoundRecords:
    """Which rows count (readable, payment or refund, settled rather than a duplicate),
    and the records they found: their keys and positions in the record tables."""

    valid: pd.Series
    is_payment: pd.Series
    is_refund: pd.Series
    settled: pd.Series
    found_payment: pd.Series
    found_refund: pd.Series
    payment_at: np.ndarray
    refund_key: pd.Series
    refund_rule: pd.Series
    record_key: pd.Series
    dup_reason: pd.Series
    payment_side: pd.DataFrame  # the found payments' columns, a row per settlement row

    @property
    def pay_rows(self) -> pd.Series:
        return self.settled & self.is_payment

    @property
    def ref_rows(self) -> pd.Series:
        return self.settled & self.is_refund

    @property
    def pay_ok(self) -> pd.Series:
        return self.pay_rows & self.found_payment

    @property
    def ref_ok(self) -> pd.Series:
        return self.ref_rows & self.found_payment & self.found_refund

    @property
    def matched(self) -> pd.Series:
        return self.pay_ok | self.ref_ok


@dataclass(frozen=True)
class Evidence:
    """What every rule reads: the file's rows, the result's rows (`out`), the checks'
    columns (`out` with the records' side beside it), what the rows found, what earlier
    dates refunded per payment, and the match's context."""

    rows: pd.DataFrame
    out: pd.DataFrame
    checks: pd.DataFrame
    found: FoundRecords
    refunded_before: dict[str, int]
    ctx: MatchContext


def found_records(rows: pd.DataFrame, payments: pd.DataFrame, refunds: pd.DataFrame,
                  prior: pd.DataFrame) -> FoundRecords:
    """Each row's payment, its duplicates (later in this file, or settled by an earlier
    settlement date) and, for the refunds that are settled, their refund records."""
    valid = rows["invalid_reason"] == ""
    is_payment = valid & (rows["transaction_type"] == cat.PAYMENT)
    is_refund = valid & (rows["transaction_type"] == cat.REFUND)
    rows["settle_key"] = settle_keys(rows)
    keyed = valid & (rows["settle_key"] != "")
    p, named, payment_at = aligned(rows["merchant_invoice"], payments, "partner_reference_no",
                                    ["amount", "status", "transaction_date"])
    found_payment = pd.Series(named, index=rows.index) & valid
    dup_reason = duplicate_reasons(rows, keyed, prior, payment_at)
    settled = valid & (dup_reason == "")
    taken = set(prior.loc[prior["kind"] == cat.REFUND, "record_key"]) - {""}
    refund_key, refund_rule = match_refunds(rows, settled & is_refund, refunds, taken)
    record_key = pick(is_payment | ~valid, pick(found_payment, rows["merchant_invoice"], ""),
                       refund_key)
    return FoundRecords(valid=valid, is_payment=is_payment, is_refund=is_refund, settled=settled,
                        found_payment=found_payment, found_refund=refund_key != "",
                        payment_at=payment_at, refund_key=refund_key, refund_rule=refund_rule,
                        record_key=record_key, dup_reason=dup_reason, payment_side=p)
