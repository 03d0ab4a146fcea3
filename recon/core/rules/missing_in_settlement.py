"""MISSING_IN_SETTLEMENT: paid payments and done refunds covered by the settlement date
that no file settled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.core.found import FoundRecords
from recon.core.schemas import text_isin


def items(payments: pd.DataFrame, refunds: pd.DataFrame, found: FoundRecords,
                refund_at: np.ndarray, prior: pd.DataFrame, later: pd.DataFrame,
                covered: set[dt.date]) -> pd.DataFrame:
    """Covered records no file settled. A record is settled when this file's ledger names
    it (the settled rows that found it: their lookups give its position, a record table
    having one row per key) or an earlier date's did."""
    names_record = (found.settled & (found.record_key != "")).to_numpy(dtype=bool)
    settled_records = {
        cat.PAYMENT: _settled(payments["partner_reference_no"], found.payment_at,
                              names_record & found.is_payment.to_numpy(dtype=bool), prior,
                              cat.PAYMENT),
        cat.REFUND: _settled(refunds["partner_refund_no"], refund_at,
                             names_record & found.is_refund.to_numpy(dtype=bool), prior,
                             cat.REFUND)}
    later_first = later.loc[later["record_key"] != ""].sort_values(
        "settlement_date", kind="stable").drop_duplicates(["kind", "record_key"])
    return _missing_in_settlement(payments, refunds, covered, settled_records, later_first)


MISSING_COLUMNS = ("kind", "record_key", "reference_no", "original_reference_no", "amount",
                   "signed_amount", "status", "record_time", "record_date", "pay_option",
                   "closed_by_date")


def _settled(keys: pd.Series, at: np.ndarray, naming: np.ndarray, prior: pd.DataFrame,
             kind: str) -> np.ndarray:
    """Which of the records (`keys`, one per record) are settled: those at the positions
    `at` of the rows `naming` them, and those whose key an entry of `kind` in `prior`
    names. The million keys of this file's ledger are not hashed again."""
    settled = np.zeros(len(keys), dtype=bool)
    found = at[naming]
    settled[found[found >= 0]] = True
    earlier = prior.loc[(prior["kind"] == kind) & (prior["record_key"] != ""), "record_key"]
    if len(earlier):
        settled |= text_isin(keys, earlier).to_numpy(dtype=bool)
    return settled


def _missing_in_settlement(
    payments: pd.DataFrame,
    refunds: pd.DataFrame,
    covered: Iterable[dt.date],
    settled: dict[str, np.ndarray],
    settled_after: pd.DataFrame,
) -> pd.DataFrame:
    """`settled`: per kind, which records a file settled (this one or earlier);
    `settled_after`: kind, record_key and the first later settlement_date that settled it."""
    covered = list(covered)
    # One mask per table, then one take: the tables have a million rows.
    pay = payments.loc[payments["status"].isin(cat.PAID_STATUSES)
                       & payments["transaction_date"].isin(covered)
                       & ~settled[cat.PAYMENT]]
    ref = refunds.loc[refunds["status"].isin(cat.DONE_REFUND_STATUSES)
                      & refunds["refund_date"].isin(covered)
                      & ~settled[cat.REFUND]]
    frames = [
        pd.DataFrame({
            "kind": cat.PAYMENT,
            "record_key": pay["partner_reference_no"],
            "reference_no": pay["reference_no"],
            "original_reference_no": pay["partner_reference_no"],
            "amount": pay["amount"],
            "signed_amount": pay["amount"],
            "status": pay["status"].astype("str"),  # text, as the refunds' below
            "record_time": pay["transaction_time"],
            "record_date": pay["transaction_date"],
            "pay_option": pay["pay_option"].astype("str"),
        }),
        pd.DataFrame({
            "kind": cat.REFUND,
            "record_key": ref["partner_refund_no"],
            "reference_no": ref["refund_no"],
            "original_reference_no": ref["original_partner_reference_no"],
            "amount": ref["refund_amount"],
            "signed_amount": -ref["refund_amount"],
            "status": ref["status"],
            "record_time": ref["refund_time"],
            "record_date": ref["refund_date"],
            "pay_option": "",
        }),
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in MISSING_COLUMNS}).astype(
            {"amount": "Int64", "signed_amount": "Int64"})
    missing = pd.concat(frames, ignore_index=True)
    closed_by = missing[["kind", "record_key"]].merge(
        settled_after[["kind", "record_key", "settlement_date"]], how="left",
        on=["kind", "record_key"])["settlement_date"].to_numpy(dtype=object)
    missing["closed_by_date"] = [None if pd.isna(d) else d for d in closed_by]
    missing = missing.sort_values(["record_date", "kind", "record_key"]).reset_index(drop=True)
    return missing.loc[:, list(MISSING_COLUMNS)]
