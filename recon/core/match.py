"""The matching engine: settlement rows + records + earlier state in, a result out.

Pure: no files, no database, no Prefect. Every settlement row gets exactly one category
(SPEC section 5, first applicable wins, the others listed as flags); paid payments and
done refunds covered by the settlement date that no file settled become
MISSING_IN_SETTLEMENT items; open items from earlier dates are closed when this file
settles their record.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.core.analysis import all_open_items, record_totals, refund_deltas
from recon.core.found import Evidence, FoundRecords, aligned, found_records
from recon.core.precedence import categories_of
from recon.core.reasons import Finding, pick
from recon.core.result import FlaggedFrame, Ledger, MatchContext, ReconResult
from recon.core.rules import (
    amount_mismatch,
    duplicate_settlement,
    fee_mismatch,
    invalid_row,
    missing_in_records,
    missing_in_settlement,
    refund_mismatch,
    status_mismatch,
    timing_difference,
)
from recon.core.schemas import (
    LEDGER,
    OPEN_ITEMS,
    PAYMENTS,
    REFUNDS,
    SETTLEMENT_ROWS,
    conform,
    text_isin,
)


def conform_inputs(rows: pd.DataFrame, payments: pd.DataFrame, refunds: pd.DataFrame,
                   ledger: pd.DataFrame, open_items: pd.DataFrame
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame,
                              pd.DataFrame]:
    """The match's inputs with their schemas' columns and types (`conform`)."""
    return (conform(rows, SETTLEMENT_ROWS, "settlement rows"),
            conform(payments, PAYMENTS, "payments"), conform(refunds, REFUNDS, "refunds"),
            conform(ledger, LEDGER, "ledger"), conform(open_items, OPEN_ITEMS, "open items"))


def match_settlement(
    rows: pd.DataFrame,
    payments: pd.DataFrame,
    refunds: pd.DataFrame,
    ledger: pd.DataFrame,
    open_items: pd.DataFrame,
    ctx: MatchContext,
    on_ledger: Callable[[Ledger], None] | None = None,
) -> ReconResult:
    """Classify every settlement row and the records covered by the settlement date.

    `ledger` holds what other settlement dates settled (earlier ones make duplicates;
    later ones, seen when an old date is re-run, close this date's missing items);
    `open_items` are MISSING_IN_SETTLEMENT items of earlier dates open as of this date.
    `on_ledger` is given the ledger this file writes as soon as it is known, before the
    findings: the caller may start writing it.
    """
    rows, payments, refunds, ledger, open_items = conform_inputs(
        rows, payments, refunds, ledger, open_items)
    day = ctx.settlement_date
    ledger_dates = ledger["settlement_date"].to_numpy(dtype=object)
    prior = ledger.loc[np.array([d < day for d in ledger_dates], dtype=bool)]
    later = ledger.loc[np.array([d > day for d in ledger_dates], dtype=bool)]
    found = found_records(rows, payments, refunds, prior)
    # The ledger this file writes: known now, so the caller may start writing it.
    new_ledger = Ledger(kind=rows["transaction_type"], settle_key=rows["settle_key"],
                        record_key=found.record_key,
                        original_reference_no=rows["merchant_invoice"],
                        amount=rows["gross"].abs(), line_no=rows["line_no"],
                        at=np.flatnonzero(found.settled.to_numpy(dtype=bool)))
    if on_ledger is not None:
        on_ledger(new_ledger)
    out, checks, refund_at = _records_side(rows, payments, refunds, found)
    before = refund_mismatch.refunded_before(prior)
    findings = _findings(Evidence(rows, out, checks, found, before, ctx))
    del checks
    out["category"], out["reason"], out["flags"] = categories_of(rows.index, findings)
    missing = missing_in_settlement.items(payments, refunds, found, refund_at, prior, later,
                                          set(ctx.covered_dates))
    closures, still_open = _closed_items(out, rows, found, open_items, ctx)
    return _result(ctx, rows, out, missing, new_ledger, closures, still_open, payments,
                   refunds, found, before)


def _records_side(rows: pd.DataFrame, payments: pd.DataFrame, refunds: pd.DataFrame,
                  found: FoundRecords) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The result's rows (`out`: the record's key, amount, status and date, how it was
    found, the delta) and the checks' columns (`checks`: `out` with the records' side
    beside it), and the refunds' positions in their table."""
    r, _, refund_at = aligned(
        pick(found.found_refund, found.refund_key, "\x00"), refunds, "partner_refund_no",
        ["refund_amount", "status", "refund_date", "original_partner_reference_no"])
    p = found.payment_side
    out = rows.copy(deep=False)  # copy-on-write: the new columns do not touch `rows`
    is_payment_row = rows["transaction_type"] == cat.PAYMENT
    record = pd.DataFrame({
        "payment_amount": p["amount"].astype("Int64"),
        "payment_status": p["status"].astype("str").fillna(""),  # a categorical, or text
        "payment_date": p["transaction_date"],
        "refund_amount": r["refund_amount"].astype("Int64"),
        "refund_status": r["status"].fillna("").astype("str"),
        "refund_date": r["refund_date"],
        "refund_original": r["original_partner_reference_no"].fillna("").astype("str"),
    }, index=rows.index)
    del r  # a million rows: not kept to the end of the run
    out["refund_record"] = found.refund_key
    # How the record was found: the workbook's "Matched by" column. It and the record's
    # status hold a few values each: categoricals (at 10M rows "MerchantInvoice" in every
    # row is 0.2 GB as text).
    out["match_rule"] = pick(rows["transaction_type"] == cat.REFUND, found.refund_rule,
                              pick(found.found_payment, "MerchantInvoice", "")
                              ).astype("category")
    out["record_key"] = found.record_key
    out["record_amount"] = record["payment_amount"].where(is_payment_row,
                                                          record["refund_amount"])
    out["record_status"] = pick(is_payment_row, record["payment_status"],
                                 record["refund_status"]).astype("category")
    out["record_date"] = record["payment_date"].where(is_payment_row, record["refund_date"])
    gross = out["gross"]
    out["delta"] = (gross - record["payment_amount"]).where(
        is_payment_row, gross.abs() - record["refund_amount"]).astype("Int64")
    # The checks read the file's columns and the records' side together.
    return out, pd.concat([out, record], axis=1), refund_at


#: The rules in precedence order: a row's category is the first whose finding holds it.
RULES = (invalid_row, duplicate_settlement, missing_in_records, status_mismatch,
         amount_mismatch, refund_mismatch, timing_difference, fee_mismatch)


def _findings(given: Evidence) -> dict[str, Finding]:
    """Each category's finding, in precedence order."""
    return {rule.CATEGORY: rule.finding(given) for rule in RULES}


def _closed_items(out: pd.DataFrame, rows: pd.DataFrame, found: FoundRecords,
                  open_items: pd.DataFrame, ctx: MatchContext
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The open items of earlier dates this file closes (it settles their record), noted
    in the closing rows' reasons, and those still open, with their age."""
    record_key, settled, day = found.record_key, found.settled, ctx.settlement_date
    # Only the entries of the items' keys: the ledger has a million rows, the items few.
    closing_rows = settled & (record_key != "") & text_isin(record_key, open_items["record_key"])
    closers = pd.DataFrame({"kind": rows.loc[closing_rows, "transaction_type"],
                            "record_key": record_key.loc[closing_rows],
                            "line_no": rows.loc[closing_rows, "line_no"]})
    closing_lines = open_items[["kind", "record_key"]].merge(
        closers.drop_duplicates(["kind", "record_key"]), how="left", on=["kind", "record_key"])
    is_closed = pd.Series(closing_lines["line_no"].notna().to_numpy(dtype=bool),
                          index=open_items.index)
    closures = pd.DataFrame({
        "exception_id": open_items.loc[is_closed, "exception_id"].astype("int64"),
        "kind": open_items.loc[is_closed, "kind"],
        "record_key": open_items.loc[is_closed, "record_key"],
        "opened_date": open_items.loc[is_closed, "opened_date"],
        "line_no": pd.Series(closing_lines.loc[is_closed.to_numpy(), "line_no"].to_numpy(),
                             index=open_items.index[is_closed]).astype("int64"),
    }).reset_index(drop=True)
    closing = dict(zip(closures["line_no"].tolist(), closures["opened_date"].tolist(),
                       strict=True))
    if closing:
        closes_item = out["line_no"].isin(list(closing)) & settled
        out.loc[closes_item, "reason"] = [
            (reason + "; " if reason else "")
            + f"closes the MISSING_IN_SETTLEMENT item of {closing[line]}"
            for reason, line in zip(out.loc[closes_item, "reason"].tolist(),
                                    out.loc[closes_item, "line_no"].tolist(), strict=True)]
    still_open = open_items.loc[~is_closed].copy()
    still_open["age_working_days"] = [
        ctx.calendar.working_days_between(opened, day) for opened in still_open["opened_date"]
    ]
    return closures, still_open.sort_values(["opened_date", "record_key"]).reset_index(drop=True)


def _result(ctx: MatchContext, rows: pd.DataFrame, out: pd.DataFrame, missing: pd.DataFrame,
            new_ledger: Ledger, closures: pd.DataFrame, still_open: pd.DataFrame,
            payments: pd.DataFrame, refunds: pd.DataFrame, found: FoundRecords,
            before: dict[str, int]) -> ReconResult:
    """The result: the rows and records classified, with the counts and sums of each."""
    category, gross, covered = out["category"], out["gross"], set(ctx.covered_dates)
    counts = {name: int((category == name).sum()) for name in cat.ROW_CATEGORIES}
    counts[cat.MISSING_IN_SETTLEMENT] = len(missing)
    amounts = {name: int(gross.loc[category == name].sum(skipna=True))
               for name in cat.ROW_CATEGORIES}
    amounts[cat.MISSING_IN_SETTLEMENT] = int(missing["signed_amount"].sum())
    totals = {column: int(rows[column].sum(skipna=True)) for column in ("gross", "mdr", "tax",
                                                                        "net")}
    return ReconResult(
        merchant_id=ctx.merchant_id,
        settlement_date=ctx.settlement_date,
        covered_dates=ctx.covered_dates,
        rows=out,
        flagged=FlaggedFrame(out),
        missing=missing,
        ledger=new_ledger,
        closures=closures,
        open_items=still_open,
        counts={name: counts[name] for name in cat.ALL_CATEGORIES},
        amounts={name: amounts[name] for name in cat.ALL_CATEGORIES},
        totals=totals,
        record_totals=record_totals(payments, refunds, covered, ctx.fee_rules),
        refund_deltas=refund_deltas(out, found.settled, payments, refunds, before, covered),
        all_open_items=all_open_items(still_open, missing, ctx.settlement_date),
    )
