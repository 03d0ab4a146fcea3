"""Derived views of a run for the finance team: records' totals, refund deltas, open items.

Pure functions over the engine's frames; the workbook renders their output as it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon.core import categories as cat
from recon.core.fees import FeeRules
from recon.core.money import round_minor_array
from recon.core.schemas import arrow_text, text_array, text_isin

OPEN_ITEM_COLUMNS = ("opened_date", "kind", "record_key", "amount", "record_date",
                     "age_working_days")
REFUND_DELTA_COLUMNS = ("payment", "payment_amount", "refunded_in_records",
                        "refunded_as_settled", "delta", "refunds_in_records", "file_lines")


def record_totals(payments: pd.DataFrame, refunds: pd.DataFrame, covered: Iterable[dt.date],
                  rules: FeeRules) -> dict[str, int | None]:
    """What the records say the file should total for the covered dates.

    Gross: paid payments minus done refunds. MDR and tax: the contracted rate on each
    paid payment (None when a payment's source has no rate); refunds carry no fee.
    """
    days = set(covered)
    # Masks and one array of amounts, no copy of the payments' rows: they are millions.
    paid = (payments["status"].isin(cat.PAID_STATUSES)
            & payments["transaction_date"].isin(days)).to_numpy(dtype=bool)
    amount = payments["amount"].to_numpy(dtype=np.int64, na_value=0)
    done = refunds.loc[refunds["status"].isin(cat.DONE_REFUND_STATUSES)
                       & refunds["refund_date"].isin(days), "refund_amount"]
    gross = int(amount[paid].sum()) - int(done.sum())
    options = payments["pay_option"]
    if not options.isin(list(rules.mdr_rates)).to_numpy(dtype=bool)[paid].all():
        return {"gross": gross, "mdr": None, "tax": None, "net": None}
    mdr = tax = 0
    for option, rate in rules.mdr_rates.items():
        amounts = amount[paid & (options == option).to_numpy(dtype=bool)]
        fees = round_minor_array(amounts, rate, rules.rounding, rules.decimals)
        mdr += int(fees.sum())
        tax += int(round_minor_array(fees, rules.vat_rate, rules.rounding, rules.decimals).sum())
    return {"gross": gross, "mdr": mdr, "tax": tax, "net": gross - mdr - tax}


def refund_deltas(rows: pd.DataFrame, settled: pd.Series, payments: pd.DataFrame,
                  refunds: pd.DataFrame, refunded_before: Mapping[str, int],
                  covered: Iterable[dt.date]) -> pd.DataFrame:
    """Per original payment with refunds in this file or in the covered dates: payment
    amount, refunded in records (done refunds), refunded as settled (earlier dates plus
    this file), the delta, and which refunds and file lines are involved.

    Column-wise: the payments are the sorted distinct keys, every other value is summed
    or joined per payment by its position among them (at 10M rows a million refunds)."""
    days = list(covered)
    refund_rows = rows.loc[settled & (rows["transaction_type"] == cat.REFUND),
                           ["merchant_invoice", "gross", "line_no"]]
    in_window = refunds.loc[refunds["refund_date"].isin(days)
                            & refunds["status"].isin(cat.DONE_REFUND_STATUSES),
                            "original_partner_reference_no"]
    involved = pd.Index(pd.concat([refund_rows["merchant_invoice"], in_window],
                                  ignore_index=True).astype("str").unique()).sort_values()
    if not len(involved):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in REFUND_DELTA_COLUMNS})
    known = payments.loc[text_isin(payments["partner_reference_no"], involved),
                         ["partner_reference_no", "amount"]].drop_duplicates(
        "partner_reference_no", keep="last")
    amount = known["amount"].set_axis(known["partner_reference_no"]).reindex(involved)
    mine = refunds.loc[text_isin(refunds["original_partner_reference_no"], involved)]
    of_payment = involved.get_indexer(mine["original_partner_reference_no"])
    done = mine["status"].isin(cat.DONE_REFUND_STATUSES).to_numpy(dtype=bool)
    recorded = np.zeros(len(involved), dtype=np.int64)
    np.add.at(recorded, of_payment[done],
              mine["refund_amount"].to_numpy(dtype=np.int64, na_value=0)[done])
    key = mine["partner_refund_no"].astype("str")
    labels = key.where(done, key + " (" + mine["status"].astype("str") + ")")
    settled_in = involved.get_indexer(refund_rows["merchant_invoice"])
    as_settled = np.zeros(len(involved), dtype=np.int64)
    np.add.at(as_settled, settled_in,
              np.abs(refund_rows["gross"].to_numpy(dtype=np.int64, na_value=0)))
    as_settled += pd.Series(refunded_before, dtype="int64").reindex(
        involved, fill_value=0).to_numpy(dtype=np.int64)
    frame = pd.DataFrame({
        "payment": pd.Series(involved, dtype="str"),
        "payment_amount": amount.array,
        "refunded_in_records": recorded,
        "refunded_as_settled": as_settled,
        "delta": as_settled - recorded,
        "refunds_in_records": _joined(of_payment, labels, len(involved)),
        "file_lines": _joined(settled_in, refund_rows["line_no"].astype("str"), len(involved)),
    }, columns=list(REFUND_DELTA_COLUMNS))
    return frame.astype({"payment_amount": "Int64"})


def _joined(group: np.ndarray, texts: pd.Series, groups: int) -> pd.Series:
    """Per group (0 to groups - 1), its `texts` in their order joined by ', '."""
    order = np.argsort(group, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=groups))])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()),
                                          text_array(texts).take(pa.array(order)))
    return arrow_text(pc.binary_join(lists, pa.scalar(", ", pa.large_string())))


def all_open_items(earlier: pd.DataFrame, missing: pd.DataFrame,
                   settlement_date: dt.date) -> pd.DataFrame:
    """Every MISSING_IN_SETTLEMENT item open after this run, oldest first: earlier dates'
    (with their age) and this date's own (age 0)."""
    own = missing.loc[missing["closed_by_date"].isna()]
    today = pd.DataFrame({
        "opened_date": [settlement_date] * len(own),
        "kind": own["kind"].tolist(),
        "record_key": own["record_key"].tolist(),
        "amount": own["signed_amount"].tolist(),
        "record_date": own["record_date"].tolist(),
        "age_working_days": [0] * len(own),
    }, columns=list(OPEN_ITEM_COLUMNS))
    frames = [f for f in (earlier.loc[:, list(OPEN_ITEM_COLUMNS)], today) if not f.empty]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in OPEN_ITEM_COLUMNS})
    combined = pd.concat(frames, ignore_index=True)
    combined["amount"] = combined["amount"].astype("Int64")
    combined["age_working_days"] = combined["age_working_days"].astype("int64")
    return combined.sort_values(["age_working_days", "record_date", "record_key"],
                                ascending=[False, True, True]).reset_index(drop=True)
