"""The matching engine: settlement rows + records + earlier state in, a result out.

Pure: no files, no database, no Prefect. Every settlement row gets exactly one category
(SPEC section 5, first applicable wins, the others listed as flags); paid payments and
done refunds covered by the settlement date that no file settled become
MISSING_IN_SETTLEMENT items; open items from earlier dates are closed when this file
settles their record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon import categories as cat
from recon.analysis import all_open_items, record_totals, refund_deltas
from recon.calendar import WorkingCalendar
from recon.config import FeeRules
from recon.money import format_amount, round_minor
from recon.schemas import LEDGER, OPEN_ITEMS, PAYMENTS, REFUNDS, SETTLEMENT_ROWS, conform


@dataclass(frozen=True)
class MatchContext:
    merchant_id: str
    settlement_date: dt.date
    calendar: WorkingCalendar
    fee_rules: FeeRules = field(default_factory=FeeRules)
    refund_window_days: int = 60

    @property
    def covered_dates(self) -> tuple[dt.date, ...]:
        return tuple(self.calendar.covered_dates(self.settlement_date))


@dataclass(frozen=True)
class ReconResult:
    """Everything one run found; renderers and the store read it, nothing recomputes it."""

    merchant_id: str
    settlement_date: dt.date
    covered_dates: tuple[dt.date, ...]
    rows: pd.DataFrame  # one per settlement row, with category, reason, flags, record
    missing: pd.DataFrame  # MISSING_IN_SETTLEMENT items this date opens
    ledger: pd.DataFrame  # what this file settles
    closures: pd.DataFrame  # earlier open items this file closes
    open_items: pd.DataFrame  # earlier open items still open after this run, with age
    counts: dict[str, int]
    amounts: dict[str, int]
    totals: dict[str, int]
    record_totals: dict[str, int | None]  # what the records say, for the covered dates
    refund_deltas: pd.DataFrame  # per payment with refunds: records vs settled
    all_open_items: pd.DataFrame  # every open MISSING_IN_SETTLEMENT item, with age

    @property
    def exceptions(self) -> int:
        return sum(n for c, n in self.counts.items() if c != cat.MATCHED)


# ----------------------------------------------------------------------------- helpers


def _text(frame: pd.DataFrame, mask: pd.Series, make: Callable[[Any], str]) -> pd.Series:
    """A reason text for the masked rows ('' elsewhere), built row by row on the subset."""
    out = pd.Series("", index=frame.index, dtype="str")
    if mask.any():
        subset = frame.loc[mask]
        out.loc[mask] = [make(row) for row in subset.itertuples(index=False)]
    return out


def _isin(values: pd.Series, keys: Iterable[str]) -> pd.Series:
    """values.isin(keys) for text, computed by Arrow (fast for large key sets)."""
    found = pc.is_in(pa.array(values.astype(str).tolist(), pa.string()),
                     value_set=pa.array(list(keys), pa.string()))
    return pd.Series(found.to_numpy(zero_copy_only=False).astype(bool), index=values.index)


def _amount(value: object) -> str:
    return "?" if value is None or pd.isna(value) else format_amount(int(value))  # type: ignore[call-overload]


def _pct(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f}%"


# ----------------------------------------------------------------------------- matching


def _match_refunds(
    rows: pd.DataFrame, settled_refund: pd.Series, refunds: pd.DataFrame, taken: set[str]
) -> tuple[pd.Series, pd.Series]:
    """Refund record (partner_refund_no) and the rule that found it, per refund row.

    RefundInvoice = partner_refund_no, else OVOReferenceNo = refund_no, else the earliest
    unmatched refund of the same payment with the same amount (done refunds first).
    """
    record = pd.Series("", index=rows.index, dtype="str")
    rule = pd.Series("", index=rows.index, dtype="str")
    if not settled_refund.any() or refunds.empty:
        return record, rule
    by_refund_no = refunds.loc[refunds["refund_no"] != ""].drop_duplicates("refund_no")
    by_refund_no = by_refund_no.set_index("refund_no")["partner_refund_no"]
    known = set(refunds["partner_refund_no"])
    candidates = rows.loc[settled_refund]
    claimed: set[str] = set(taken)
    for index, invoice, ovo_ref in zip(
        candidates.index, candidates["refund_invoice"], candidates["ovo_reference_no"],
        strict=True,
    ):
        if invoice and invoice in known:
            record.at[index], rule.at[index] = invoice, "RefundInvoice"
        elif ovo_ref and ovo_ref in by_refund_no.index:
            record.at[index], rule.at[index] = by_refund_no[ovo_ref], "OVOReferenceNo"
        else:
            continue
        claimed.add(record.at[index])

    unmatched = candidates.index[record.loc[candidates.index] == ""]
    if len(unmatched):
        pool = refunds.assign(
            _pending=refunds["status"].map(lambda s: s not in cat.DONE_REFUND_STATUSES)
        ).sort_values(["_pending", "refund_time", "partner_refund_no"], na_position="last")
        by_payment: dict[tuple[str, int], list[str]] = {}
        for key, original, amount in zip(
            pool["partner_refund_no"], pool["original_partner_reference_no"],
            pool["refund_amount"], strict=True,
        ):
            if not pd.isna(amount):
                by_payment.setdefault((original, int(amount)), []).append(key)
        for index in unmatched:
            gross = rows.at[index, "gross"]
            options = by_payment.get((rows.at[index, "merchant_invoice"], abs(int(gross))), [])
            for key in options:
                if key not in claimed:
                    record.at[index], rule.at[index] = key, "payment and amount"
                    claimed.add(key)
                    break
    return record, rule


def _settle_keys(rows: pd.DataFrame) -> pd.Series:
    is_payment = rows["transaction_type"] == cat.PAYMENT
    refund_key = rows["refund_invoice"].where(rows["refund_invoice"] != "",
                                              rows["ovo_reference_no"])
    return rows["merchant_invoice"].where(is_payment, refund_key).astype("str")


def _fee_findings(rows: pd.DataFrame, applies: pd.Series, is_payment: pd.Series,
                  rules: FeeRules) -> pd.Series:
    """FEE_MISMATCH reasons ('' when fees agree) for the rows where `applies`.

    Expected MDR and Tax are computed only for payment rows whose source has a contracted
    rate (MDR) or for every payment row (Tax); the Net arithmetic is checked on all rows.
    """
    tolerance = int(rules.tolerance * 100)
    reasons = pd.Series("", index=rows.index, dtype="str")
    if not applies.any():
        return reasons
    subset = rows.loc[applies, ["gross", "mdr", "tax", "net", "payment_source"]]
    gross = subset["gross"].astype("int64")
    mdr = subset["mdr"].astype("int64")
    tax = subset["tax"].astype("int64")
    net = subset["net"].astype("int64")
    payment = is_payment.loc[subset.index]
    net_bad = net != gross - mdr - tax
    found: dict[object, list[str]] = {}

    def note(index: object, text: str) -> None:
        found.setdefault(index, []).append(text)

    for source, rate in rules.mdr_rates.items():
        mask = payment & (subset["payment_source"] == source)
        for index, g, m in zip(mask.index[mask], gross[mask], mdr[mask], strict=True):
            expected = round_minor(int(g), rate, rules.rounding, rules.decimals)
            if abs(int(m) - expected) > tolerance:
                note(index, f"MDRAmount {format_amount(int(m))} ≠ {_pct(rate)} of "
                            f"{format_amount(int(g))} = {format_amount(expected)}")
    vat = rules.vat_rate
    for index, m, t in zip(payment.index[payment], mdr[payment], tax[payment], strict=True):
        expected_tax = round_minor(int(m), vat, rules.rounding, rules.decimals)
        if abs(int(t) - expected_tax) > tolerance:
            note(index, f"TaxAmount {format_amount(int(t))} ≠ VAT {_pct(vat)} of MDR "
                        f"{format_amount(int(m))} = {format_amount(expected_tax)}")
    for index, g, m, t, n in zip(net_bad.index[net_bad], gross[net_bad], mdr[net_bad],
                                 tax[net_bad], net[net_bad], strict=True):
        note(index, f"NetAmount {format_amount(int(n))} ≠ Gross − MDR − Tax = "
                    f"{format_amount(int(g - m - t))}")
    for index, texts in found.items():
        reasons.at[index] = "; ".join(texts)
    return reasons


def match_settlement(
    rows: pd.DataFrame,
    payments: pd.DataFrame,
    refunds: pd.DataFrame,
    ledger: pd.DataFrame,
    open_items: pd.DataFrame,
    ctx: MatchContext,
) -> ReconResult:
    """Classify every settlement row and the records covered by the settlement date.

    `ledger` holds what other settlement dates settled (earlier ones make duplicates;
    later ones, seen when an old date is re-run, close this date's missing items);
    `open_items` are MISSING_IN_SETTLEMENT items of earlier dates open as of this date.
    """
    rows = conform(rows, SETTLEMENT_ROWS, "settlement rows")
    payments = conform(payments, PAYMENTS, "payments")
    refunds = conform(refunds, REFUNDS, "refunds")
    ledger = conform(ledger, LEDGER, "ledger")
    open_items = conform(open_items, OPEN_ITEMS, "open items")
    day = ctx.settlement_date
    covered = set(ctx.covered_dates)
    prior = ledger.loc[ledger["settlement_date"].map(lambda d: d < day).astype(bool)]
    later = ledger.loc[ledger["settlement_date"].map(lambda d: d > day).astype(bool)]

    valid = rows["invalid_reason"] == ""
    is_payment = valid & (rows["transaction_type"] == cat.PAYMENT)
    is_refund = valid & (rows["transaction_type"] == cat.REFUND)
    rows["settle_key"] = _settle_keys(rows)
    keyed = valid & (rows["settle_key"] != "")

    # ---- duplicates: later in this file, or settled by an earlier settlement date
    first_seen: dict[tuple[str, str], str] = {}
    for kind, key, date, line in zip(prior["kind"].tolist(), prior["settle_key"].tolist(),
                                      prior["settlement_date"].tolist(),
                                      prior["line_no"].tolist(), strict=True):
        first_seen.setdefault((kind, key), f"already settled on {date} (line {line})")
    dup_reason = pd.Series("", index=rows.index, dtype="str")
    for index, kind, key, line in zip(rows.index[keyed].tolist(),
                                      rows.loc[keyed, "transaction_type"].tolist(),
                                      rows.loc[keyed, "settle_key"].tolist(),
                                      rows.loc[keyed, "line_no"].tolist(), strict=True):
        earlier = first_seen.get((kind, key))
        label = "MerchantInvoice" if kind == cat.PAYMENT else "refund"
        if earlier is not None:
            dup_reason.at[index] = f"{label} {key} {earlier}"
        else:
            first_seen[(kind, key)] = f"already settled on line {line} of this file"
    duplicate = dup_reason != ""
    settled = valid & ~duplicate

    # ---- records
    pay = payments.drop_duplicates("partner_reference_no").set_index("partner_reference_no")
    found_payment = _isin(rows["merchant_invoice"], pay.index.tolist()) & valid
    p = pay.reindex(rows["merchant_invoice"]).reset_index(drop=True)
    p.index = rows.index

    taken = set(prior.loc[prior["kind"] == cat.REFUND, "record_key"]) - {""}
    refund_key, refund_rule = _match_refunds(rows, settled & is_refund, refunds, taken)
    ref = refunds.drop_duplicates("partner_refund_no").set_index("partner_refund_no")
    r = ref.reindex(refund_key.where(refund_key != "", "\x00")).reset_index(drop=True)
    r.index = rows.index
    found_refund = refund_key != ""

    out = rows.copy()
    out["payment_amount"] = p["amount"].astype("Int64")
    out["payment_status"] = p["status"].fillna("").astype("str")
    out["payment_time"] = p["transaction_time"]
    out["payment_date"] = p["transaction_date"]
    out["payment_pay_option"] = p["pay_option"].fillna("").astype("str")
    out["refund_record"] = refund_key
    # How the record was found: the workbook's "Matched by" column.
    out["match_rule"] = refund_rule.where(
        rows["transaction_type"] == cat.REFUND,
        pd.Series("MerchantInvoice", index=rows.index).where(found_payment, ""))
    out["refund_record_no"] = r["refund_no"].fillna("").astype("str")
    out["refund_amount"] = r["refund_amount"].astype("Int64")
    out["refund_status"] = r["status"].fillna("").astype("str")
    out["refund_time"] = r["refund_time"]
    out["refund_date"] = r["refund_date"]
    out["refund_original"] = r["original_partner_reference_no"].fillna("").astype("str")

    # Record-side view per row: what the workbook shows as "the record".
    out["record_key"] = (rows["merchant_invoice"].where(found_payment, "")
                         .where(is_payment | ~valid, refund_key)).astype("str")
    out["record_amount"] = out["payment_amount"].where(rows["transaction_type"] == cat.PAYMENT,
                                                       out["refund_amount"])
    out["record_status"] = out["payment_status"].where(
        rows["transaction_type"] == cat.PAYMENT, out["refund_status"])
    out["record_date"] = out["payment_date"].where(rows["transaction_type"] == cat.PAYMENT,
                                                   out["refund_date"])
    gross = out["gross"]
    out["delta"] = (gross - out["payment_amount"]).where(
        rows["transaction_type"] == cat.PAYMENT, gross.abs() - out["refund_amount"]
    ).astype("Int64")

    findings: dict[str, pd.Series] = {}
    findings[cat.INVALID_ROW] = rows["invalid_reason"]
    findings[cat.DUPLICATE_SETTLEMENT] = dup_reason

    # ---- missing in records
    pay_rows = settled & is_payment
    ref_rows = settled & is_refund
    missing_payment = settled & ~found_payment
    findings[cat.MISSING_IN_RECORDS] = (
        _text(out, pay_rows & missing_payment,
              lambda t: f"no payment with partnerReferenceNo {t.merchant_invoice}")
        + _text(out, ref_rows & missing_payment,
                lambda t: f"no payment {t.merchant_invoice} to refund")
        + _text(out, ref_rows & found_payment & ~found_refund,
                lambda t: "no refund record for "
                + (f"RefundInvoice {t.refund_invoice}, " if t.refund_invoice else "")
                + (f"OVOReferenceNo {t.ovo_reference_no}, " if t.ovo_reference_no else "")
                + f"nor an unmatched refund of {_amount(abs(t.gross))} on payment "
                f"{t.merchant_invoice}")
    )
    pay_ok = pay_rows & found_payment
    ref_ok = ref_rows & found_payment & found_refund

    # ---- status
    payment_unpaid = ~out["payment_status"].isin(cat.PAID_STATUSES)
    refund_undone = ~out["refund_status"].isin(cat.DONE_REFUND_STATUSES)
    findings[cat.STATUS_MISMATCH] = (
        _text(out, pay_ok & payment_unpaid,
              lambda t: f"payment status {cat.status_label(t.payment_status)}, "
              "expected 00 Success or 04 Refunded")
        + _text(out, ref_ok & refund_undone,
                lambda t: f"refund status {cat.status_label(t.refund_status)}, expected 00 Success")
        + _text(out, ref_ok & ~refund_undone & payment_unpaid,
                lambda t: f"original payment status {cat.status_label(t.payment_status)}")
    )

    # ---- amount
    findings[cat.AMOUNT_MISMATCH] = _text(
        out, pay_ok & (gross != out["payment_amount"]).fillna(False).astype(bool),
        lambda t: f"GrossAmount {_amount(t.gross)} ≠ payment amount {_amount(t.payment_amount)}"
        f" (delta {_amount(t.delta)})",
    )

    # ---- refunds: amount, owner, cumulative, window
    refunded_before: dict[str, int] = {}
    prior_refunds = prior.loc[prior["kind"] == cat.REFUND]
    for original, amount in zip(prior_refunds["original_reference_no"], prior_refunds["amount"],
                                strict=True):
        if not pd.isna(amount):
            refunded_before[original] = refunded_before.get(original, 0) + abs(int(amount))
    # Settled refunds per payment: earlier dates plus every refund row of this file, so the
    # finding does not depend on the order of rows in the file.
    totals = dict(refunded_before)
    for index in rows.index[ref_rows]:
        invoice = rows.at[index, "merchant_invoice"]
        totals[invoice] = totals.get(invoice, 0) + abs(int(gross.at[index]))
    cumulative = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    for index in rows.index[ref_rows]:
        cumulative.at[index] = totals[rows.at[index, "merchant_invoice"]]
    out["refunded_cumulative"] = cumulative
    window = ctx.refund_window_days

    def refund_problems(t: Any) -> str:
        found = []
        row = t._asdict()
        settled_amount = abs(int(row["gross"]))
        if settled_amount != int(row["refund_amount"]):
            found.append(f"refund amount {format_amount(settled_amount)} ≠ refund record "
                         f"{_amount(row['refund_amount'])}")
        if row["refund_original"] != row["merchant_invoice"]:
            found.append(f"refund record {row['refund_record']} belongs to payment "
                         f"{row['refund_original']}, not {row['merchant_invoice']}")
        if int(row["refunded_cumulative"]) > int(row["payment_amount"]):
            found.append(f"refunds settled for {row['merchant_invoice']} total "
                         f"{_amount(row['refunded_cumulative'])}, more than the payment "
                         f"{_amount(row['payment_amount'])}")
        if row["refund_date"] is not None and row["payment_date"] is not None:
            days = (row["refund_date"] - row["payment_date"]).days
            if days > window:
                found.append(f"refund {days} days after the payment (window {window} days)")
        return "; ".join(found)

    findings[cat.REFUND_MISMATCH] = _text(out, ref_ok, refund_problems)

    # ---- timing
    record_date = out["record_date"]
    matched = pay_ok | ref_ok
    off_window = matched & record_date.map(lambda d: d is not None and not pd.isna(d)
                                           and d not in covered).astype(bool)
    findings[cat.TIMING_DIFFERENCE] = _text(
        out, off_window,
        lambda t: f"record date {t.record_date} is covered by settlement date "
        f"{ctx.calendar.next_working_day(t.record_date)}, not {day}",
    )

    # ---- fees
    findings[cat.FEE_MISMATCH] = _fee_findings(out, pay_ok | ref_ok, is_payment, ctx.fee_rules)

    # ---- category = first finding in precedence order; the rest become flags
    category = pd.Series("", index=rows.index, dtype="str")
    reason = pd.Series("", index=rows.index, dtype="str")
    flags = pd.Series("", index=rows.index, dtype="str")
    for name in cat.ROW_CATEGORIES[:-1]:
        hit = findings[name] != ""
        first = hit & (category == "")
        category = category.where(~first, name)
        reason = reason.where(~first, findings[name])
        extra = hit & ~first
        flags = flags.where(~extra, flags.where(flags == "", flags + "; ") + name + ": "
                            + findings[name])
    category = category.where(category != "", cat.MATCHED)
    out["category"] = category
    out["reason"] = reason
    out["flags"] = flags

    # ---- the ledger this file writes
    ledger_rows = out.loc[settled]
    new_ledger = pd.DataFrame({
        "kind": ledger_rows["transaction_type"],
        "settle_key": ledger_rows["settle_key"],
        "record_key": ledger_rows["record_key"],
        "original_reference_no": ledger_rows["merchant_invoice"],
        "amount": ledger_rows["gross"].abs(),
        "line_no": ledger_rows["line_no"],
    }).reset_index(drop=True)

    # ---- missing in settlement: covered records no file settled
    settled_now = {(k, rk) for k, rk in zip(new_ledger["kind"].tolist(),
                                            new_ledger["record_key"].tolist(), strict=True) if rk}
    settled_before = {(k, rk) for k, rk in zip(prior["kind"].tolist(),
                                               prior["record_key"].tolist(), strict=True) if rk}
    settled_after: dict[tuple[str, str], dt.date] = {}
    for k, rk, d in sorted(zip(later["kind"], later["record_key"], later["settlement_date"],
                               strict=True), key=lambda item: item[2]):
        settled_after.setdefault((k, rk), d)
    missing = _missing_in_settlement(payments, refunds, covered, settled_now | settled_before,
                                     settled_after)

    # ---- open items of earlier dates: closed when this file settles their record
    line_by_record = {(k, rk): int(line) for k, rk, line in zip(
        new_ledger["kind"].tolist(), new_ledger["record_key"].tolist(),
        new_ledger["line_no"].tolist(), strict=True) if rk}
    closes = [line_by_record.get((k, rk)) for k, rk in zip(open_items["kind"],
                                                            open_items["record_key"], strict=True)]
    is_closed = pd.Series([c is not None for c in closes], index=open_items.index, dtype=bool)
    closures = pd.DataFrame({
        "exception_id": open_items.loc[is_closed, "exception_id"].astype("int64"),
        "kind": open_items.loc[is_closed, "kind"],
        "record_key": open_items.loc[is_closed, "record_key"],
        "opened_date": open_items.loc[is_closed, "opened_date"],
        "line_no": pd.Series([c for c in closes if c is not None], dtype="int64",
                             index=open_items.index[is_closed]),
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
    still_open = still_open.sort_values(["opened_date", "record_key"]).reset_index(drop=True)

    counts = {name: int((category == name).sum()) for name in cat.ROW_CATEGORIES}
    counts[cat.MISSING_IN_SETTLEMENT] = len(missing)
    amounts = {name: int(gross.loc[category == name].sum(skipna=True))
               for name in cat.ROW_CATEGORIES}
    amounts[cat.MISSING_IN_SETTLEMENT] = int(missing["signed_amount"].sum())
    totals = {column: int(rows[column].sum(skipna=True)) for column in ("gross", "mdr", "tax",
                                                                        "net")}
    return ReconResult(
        merchant_id=ctx.merchant_id,
        settlement_date=day,
        covered_dates=ctx.covered_dates,
        rows=out,
        missing=missing,
        ledger=new_ledger,
        closures=closures,
        open_items=still_open,
        counts={name: counts[name] for name in cat.ALL_CATEGORIES},
        amounts={name: amounts[name] for name in cat.ALL_CATEGORIES},
        totals=totals,
        record_totals=record_totals(payments, refunds, covered, ctx.fee_rules),
        refund_deltas=refund_deltas(out, settled, payments, refunds, refunded_before, covered),
        all_open_items=all_open_items(still_open, missing, day),
    )


MISSING_COLUMNS = ("kind", "record_key", "reference_no", "original_reference_no", "amount",
                   "signed_amount", "status", "record_time", "record_date", "pay_option",
                   "closed_by_date")


def _missing_in_settlement(
    payments: pd.DataFrame,
    refunds: pd.DataFrame,
    covered: Iterable[dt.date],
    settled: set[tuple[str, str]],
    settled_after: dict[tuple[str, str], dt.date],
) -> pd.DataFrame:
    covered = set(covered)
    pay = payments.loc[payments["status"].isin(cat.PAID_STATUSES)
                       & payments["transaction_date"].isin(covered)]
    pay = pay.loc[[(cat.PAYMENT, key) not in settled
                   for key in pay["partner_reference_no"].tolist()]]
    ref = refunds.loc[refunds["status"].isin(cat.DONE_REFUND_STATUSES)
                      & refunds["refund_date"].isin(covered)]
    ref = ref.loc[[(cat.REFUND, key) not in settled for key in ref["partner_refund_no"].tolist()]]
    frames = [
        pd.DataFrame({
            "kind": cat.PAYMENT,
            "record_key": pay["partner_reference_no"],
            "reference_no": pay["reference_no"],
            "original_reference_no": pay["partner_reference_no"],
            "amount": pay["amount"],
            "signed_amount": pay["amount"],
            "status": pay["status"],
            "record_time": pay["transaction_time"],
            "record_date": pay["transaction_date"],
            "pay_option": pay["pay_option"],
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
    missing["closed_by_date"] = [settled_after.get((k, rk)) for k, rk in
                                 zip(missing["kind"], missing["record_key"], strict=True)]
    missing = missing.sort_values(["record_date", "kind", "record_key"]).reset_index(drop=True)
    return missing.loc[:, list(MISSING_COLUMNS)]
