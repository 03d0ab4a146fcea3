"""The matching engine: settlement rows + records + earlier state in, a result out.

Pure: no files, no database, no Prefect. Every settlement row gets exactly one category
(SPEC section 5, first applicable wins, the others listed as flags); paid payments and
done refunds covered by the settlement date that no file settled become
MISSING_IN_SETTLEMENT items; open items from earlier dates are closed when this file
settles their record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon import categories as cat
from recon.analysis import all_open_items, record_totals, refund_deltas
from recon.calendar import WorkingCalendar
from recon.config import FeeRules
from recon.money import format_amount, minor_text, round_minor_array
from recon.schemas import (
    LEDGER,
    OPEN_ITEMS,
    PAYMENTS,
    REFUNDS,
    SETTLEMENT_ROWS,
    arrow_text,
    conform,
    label_column,
    positions_in,
    text_array,
    text_isin,
)


class FlaggedSource(Protocol):
    """Flagged rows kept elsewhere than in `ReconResult.rows` (a run in parts keeps them on
    disk): how many of each category, the first rows of one, and all of them in file
    order, a batch at a time. The matching does not know where they are kept."""

    counts: dict[str, int]

    def head(self, category: str, rows: int) -> pd.DataFrame: ...

    def batches(self, category: str, rows: int, start: int = 0
                ) -> Iterator[pd.DataFrame]: ...


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
class Ledger:
    """What this file settles: an entry per settled row (its kind, settle key, record key,
    original payment, amount and line), named by the row's position among the file's
    rows. The columns are the rows' own, taken only where they are read: at 10M rows a
    copy of them took 0.9 GB and 3 s while the rows were still held."""

    kind: pd.Series  # the rows' columns, a value per row of the file
    settle_key: pd.Series
    record_key: pd.Series
    original_reference_no: pd.Series
    amount: pd.Series  # the settled amount: the row's gross without its sign
    line_no: pd.Series
    at: np.ndarray  # the settled rows' positions, in file order

    COLUMNS = ("kind", "settle_key", "record_key", "original_reference_no", "amount",
               "line_no")

    @classmethod
    def of(cls, entries: pd.DataFrame) -> Ledger:
        """A ledger of the `entries` (a frame of its COLUMNS), each one settled."""
        return cls(**{name: entries[name].reset_index(drop=True) for name in cls.COLUMNS},
                   at=np.arange(len(entries)))

    def __len__(self) -> int:
        return len(self.at)

    def __getitem__(self, name: str) -> pd.Series:
        """One column of the entries, in file order."""
        if name not in self.COLUMNS:
            raise KeyError(name)
        return getattr(self, name).take(self.at).reset_index(drop=True)


@dataclass(frozen=True)
class ReconResult:
    """Everything one run found; renderers and the store read it, nothing recomputes it."""

    merchant_id: str
    settlement_date: dt.date
    covered_dates: tuple[dt.date, ...]
    rows: pd.DataFrame  # one per settlement row, with category, reason, flags, record
    missing: pd.DataFrame  # MISSING_IN_SETTLEMENT items this date opens
    ledger: Ledger  # what this file settles
    closures: pd.DataFrame  # earlier open items this file closes
    open_items: pd.DataFrame  # earlier open items still open after this run, with age
    counts: dict[str, int]
    amounts: dict[str, int]
    totals: dict[str, int]
    record_totals: dict[str, int | None]  # what the records say, for the covered dates
    refund_deltas: pd.DataFrame  # per payment with refunds: records vs settled
    all_open_items: pd.DataFrame  # every open MISSING_IN_SETTLEMENT item, with age
    #: A run in parts: its flagged rows kept elsewhere (on disk), `rows` then holding
    #: none of them.
    flagged: FlaggedSource | None = None

    @property
    def exceptions(self) -> int:
        return sum(n for c, n in self.counts.items() if c != cat.MATCHED)


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Finding:
    """One check's reasons: the positions of the rows it found and a text for each. A
    million-row column of mostly empty texts per check would cost more than the check."""

    positions: np.ndarray
    texts: list[str]

    def __add__(self, other: _Finding) -> _Finding:  # checks of disjoint rows, as one
        return _Finding(np.concatenate([self.positions, other.positions]),
                        self.texts + other.texts)

    @classmethod
    def of(cls, reasons: pd.Series) -> _Finding:
        """The non-empty texts of a reason column."""
        found = np.flatnonzero((reasons != "").to_numpy(dtype=bool))
        return cls(found, reasons.take(found).tolist())


@dataclass(frozen=True)
class _Subset:
    """The masked rows of a frame, a column at a time, as the parts of a reason text
    (`_built`): Arrow arrays of the rows' texts, amounts and labels."""

    frame: pd.DataFrame
    at: np.ndarray

    def column(self, name: str) -> pd.Series:
        return self.frame[name].take(self.at)

    def text(self, name: str) -> pa.Array:
        return text_array(self.column(name))

    def amount(self, name: str, absolute: bool = False) -> pa.Array:
        """Amounts as exact decimal text, '?' where there is none (as `_amount`)."""
        values = self.column(name)
        minor = pa.array(values.abs() if absolute else values, pa.int64(), from_pandas=True)
        return pc.fill_null(minor_text(minor), "?")

    def labelled(self, label: str, name: str) -> pa.Array:
        """'<label><value>, ' where the row has a value, '' where it has none."""
        values = self.text(name)
        text = pa.large_string()
        return pc.if_else(pc.equal(values, ""), pa.scalar("", text), pc.binary_join_element_wise(
            pa.scalar(label, text), values, pa.scalar(", ", text), pa.scalar("", text)))

    def per_value(self, name: str, make: Callable[[Any], str]) -> pa.Array:
        """`make` of each row's value, called once per distinct value (a status code, a
        date: a few over thousands of rows)."""
        return text_array(label_column(self.column(name), make))


def _built(frame: pd.DataFrame, mask: pd.Series,
           parts: Callable[[_Subset], Sequence[str | pa.Array]]) -> _Finding:
    """A reason text for each masked row, built column-wise: `parts` gives the text's
    fixed pieces and the masked rows' columns, joined in order."""
    found = np.flatnonzero(mask.to_numpy(dtype=bool))
    if not len(found):
        return _Finding(found, [])
    pieces = [pa.scalar(part, pa.large_string()) if isinstance(part, str) else part
              for part in parts(_Subset(frame, found))]
    joined = pc.binary_join_element_wise(*pieces, pa.scalar("", pa.large_string()))
    return _Finding(found, joined.to_pylist())


def _all_that_hold(frame: pd.DataFrame, rules: Sequence[tuple[
        pd.Series, Callable[[_Subset], Sequence[str | pa.Array]]]]) -> _Finding:
    """One finding of several conditions, each with its reason (`_built`): the rows where
    any holds, each with the reasons of those that hold, joined by '; ' in the rules'
    order."""
    said: dict[int, list[str]] = {}
    for mask, parts in rules:
        found = _built(frame, mask, parts)
        for at, text in zip(found.positions.tolist(), found.texts, strict=True):
            said.setdefault(at, []).append(text)
    positions = np.array(sorted(said), dtype=np.int64)
    return _Finding(positions, ["; ".join(said[at]) for at in positions.tolist()])


def _texts(index: pd.Index, positions: np.ndarray, texts: Sequence[str],
           other: str = "") -> pd.Series:
    """A text column over `index`: `texts` at `positions` (a mask, or the positions in
    order), `other` elsewhere. Taken by Arrow from the few texts, not a million objects."""
    at = np.full(len(index), len(texts), dtype=np.int64)
    at[positions] = np.arange(len(texts))
    values = pa.array([*texts, other], pa.large_string())
    return pd.Series(arrow_text(values.take(pa.array(at))).array, index=index)


def _categorical_texts(index: pd.Index, positions: np.ndarray, texts: Sequence[str],
                       other: str) -> pd.Series:
    """`_texts` as a categorical column, made from its codes: a byte per row instead of
    the text and its 8-byte offset, for a column of a few distinct values."""
    names = sorted({*texts, other})
    code = {name: i for i, name in enumerate(names)}
    codes = np.full(len(index), code[other], dtype=np.int8 if len(names) < 128 else np.int32)
    codes[positions] = [code[text] for text in texts]
    return pd.Series(pd.Categorical.from_codes(codes, pd.Index(names, dtype="str")),
                     index=index)


def _pick(mask: pd.Series, then: pd.Series | str, other: pd.Series | str) -> pd.Series:
    """`then` where `mask`, else `other`, for text columns: one Arrow if_else. pandas'
    `where` on Arrow text rewrites the column through a masked replace, ten times slower."""
    def arrow(value: pd.Series | str) -> pa.Array | pa.Scalar:
        return pa.scalar(value, pa.large_string()) if isinstance(value, str) else text_array(value)

    chosen = pc.if_else(pa.array(mask.to_numpy(dtype=bool)), arrow(then), arrow(other))
    return pd.Series(arrow_text(chosen).array, index=mask.index)


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
    if not settled_refund.any() or refunds.empty:
        nothing = _texts(rows.index, np.zeros(0, dtype=np.intp), [])
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
    return _texts(rows.index, positions, keys), _texts(rows.index, positions, rules)


def _aligned(keys: pd.Series, table: pd.DataFrame, key: str,
             columns: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """`table`'s `columns` for each of `keys`, from the first row with that key (missing
    values where there is none), where one was found, and its position in `table` (-1
    where none): one Arrow lookup instead of a drop_duplicates, an isin and a reindex."""
    found, take = positions_in(text_array(keys), text_array(table[key]))
    return pd.DataFrame({name: table[name].array.take(take, allow_fill=True)
                         for name in columns}, index=keys.index), found, take


def refund_keys(rows: pd.DataFrame) -> pd.Series:
    """The key a refund row settles: its RefundInvoice, else its OVOReferenceNo."""
    return _pick(rows["refund_invoice"] != "", rows["refund_invoice"], rows["ovo_reference_no"])


def _settle_keys(rows: pd.DataFrame) -> pd.Series:
    is_payment = rows["transaction_type"] == cat.PAYMENT
    return _pick(is_payment, rows["merchant_invoice"], refund_keys(rows))


def conform_inputs(rows: pd.DataFrame, payments: pd.DataFrame, refunds: pd.DataFrame,
                   ledger: pd.DataFrame, open_items: pd.DataFrame
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame,
                              pd.DataFrame]:
    """The match's inputs with their schemas' columns and types (`conform`)."""
    return (conform(rows, SETTLEMENT_ROWS, "settlement rows"),
            conform(payments, PAYMENTS, "payments"), conform(refunds, REFUNDS, "refunds"),
            conform(ledger, LEDGER, "ledger"), conform(open_items, OPEN_ITEMS, "open items"))


def _fee_findings(rows: pd.DataFrame, applies: pd.Series, is_payment: pd.Series,
                  rules: FeeRules) -> _Finding:
    """FEE_MISMATCH reasons, for the rows among those where `applies` whose fees disagree.

    Expected MDR and Tax are computed only for payment rows whose source has a contracted
    rate (MDR) or for every payment row (Tax); the Net arithmetic is checked on all rows.
    Computed on whole columns in exact integer arithmetic; texts only for the rows found.
    """
    tolerance = int(rules.tolerance * 100)
    if not applies.any():
        return _Finding(np.zeros(0, dtype=np.intp), [])
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
            f"MDRAmount {format_amount(int(m))} ≠ {_pct(rate)} of {format_amount(int(g))} = "
            f"{format_amount(int(e))}"
            for m, g, e in zip(mdr[where], gross[where], expected, strict=True)], strict=True))
    vat = rules.vat_rate
    where, expected = off_rate(tax, mdr, payment, vat)
    tax_text = dict(zip(where.tolist(), [
        f"TaxAmount {format_amount(int(t))} ≠ VAT {_pct(vat)} of MDR {format_amount(int(m))} = "
        f"{format_amount(int(e))}"
        for t, m, e in zip(tax[where], mdr[where], expected, strict=True)], strict=True))
    where = np.flatnonzero(net != gross - mdr - tax)
    net_text = dict(zip(where.tolist(), [
        f"NetAmount {format_amount(int(n))} ≠ Gross − MDR − Tax = {format_amount(int(g - m - t))}"
        for n, g, m, t in zip(net[where], gross[where], mdr[where], tax[where], strict=True)],
        strict=True))
    found = sorted(mdr_text.keys() | tax_text.keys() | net_text.keys())
    return _Finding(np.flatnonzero(taken)[np.array(found, dtype=np.intp)], [
        "; ".join(text for text in (mdr_text.get(i), tax_text.get(i), net_text.get(i)) if text)
        for i in found])


def _duplicate_reasons(rows: pd.DataFrame, keyed: pd.Series, prior: pd.DataFrame,
                       payment_at: np.ndarray) -> pd.Series:
    """DUPLICATE_SETTLEMENT reasons: a key settled on an earlier date (its earliest
    settlement), or a later row of this file with a key an earlier line already settled.
    `payment_at`: each row's payment among the records (its position, -1 where none)."""
    positions = np.flatnonzero(keyed.to_numpy(dtype=bool))
    if not len(positions):
        return _texts(rows.index, positions, [])
    lines = rows["line_no"].to_numpy(dtype=np.int64)[positions]
    texts = np.full(len(positions), "", dtype=object)
    before = np.zeros(len(positions), dtype=bool)
    kind_column, key_column = rows["transaction_type"], rows["settle_key"]

    def said(found: np.ndarray) -> list[str]:  # how the reasons name the rows' keys
        take = positions[found]
        return [f"{'MerchantInvoice' if kind == cat.PAYMENT else 'refund'} {key}"
                for kind, key in zip(kind_column.take(take).tolist(),
                                     key_column.take(take).tolist(), strict=True)]

    if not prior.empty:
        # One text per (kind, settle key): the kind is a word without ':', the key any text.
        pair = _pairs(kind_column, key_column)
        if len(positions) < len(rows):
            pair = pair.take(pa.array(positions))
        earliest = prior.loc[:, ["kind", "settle_key", "settlement_date", "line_no"]].sort_values(
            ["settlement_date", "line_no"], kind="stable")
        before, take = positions_in(pair, _pairs(earliest["kind"], earliest["settle_key"]))
        dates = earliest["settlement_date"].to_numpy(dtype=object)[take]
        prior_lines = earliest["line_no"].to_numpy(dtype=np.int64)[take]
        found = np.flatnonzero(before)
        texts[found] = [f"{name} already settled on {dates[i]} (line {int(prior_lines[i])})"
                        for i, name in zip(found, said(found), strict=True)]
    fresh = np.flatnonzero(~before)
    codes = _pair_codes(rows, positions[fresh], payment_at)
    # Codes are given in order of first appearance: a row repeats a pair when its code is
    # not above every code before it, and the rows where codes rise are each pair's first.
    again = np.zeros(len(codes), dtype=bool)
    again[1:] = codes[1:] <= np.maximum.accumulate(codes)[:-1]
    first = np.flatnonzero(~again)  # each pair's first row, by its code
    found = fresh[again]
    texts[found] = [f"{name} already settled on line {int(line)} of this file"
                    for name, line in zip(said(found), lines[fresh][first[codes[again]]],
                                          strict=True)]
    said_at = np.flatnonzero(texts != "")
    return _texts(rows.index, positions[said_at], list(texts[said_at]))


def _pair_codes(rows: pd.DataFrame, at: np.ndarray, payment_at: np.ndarray) -> np.ndarray:
    """A number for each row at `at`, the same for two rows exactly when their kind and
    settle key are, numbered in order of first appearance. A payment row whose payment
    was found is known by that payment's position (its key is the payment's, and a record
    table has one row per key): only the other rows' keys are hashed, not a million."""
    position = payment_at[at]
    by_payment = ((rows["transaction_type"] == cat.PAYMENT).to_numpy(dtype=bool)[at]
                  & (position >= 0))
    codes = position.astype(np.int64)
    others = np.flatnonzero(~by_payment)
    if len(others):
        where = pa.array(at[others])
        pair = _pairs(rows["transaction_type"].take(where), rows["settle_key"].take(where))
        numbered = pc.dictionary_encode(pair).indices.to_numpy(zero_copy_only=False)
        codes[others] = int(payment_at.max(initial=-1)) + 1 + numbered
    return np.asarray(pd.factorize(codes)[0], dtype=np.intp)


def _pairs(kinds: pd.Series, keys: pd.Series) -> pa.Array:
    return pc.binary_join_element_wise(text_array(kinds), text_array(keys),
                                       pa.scalar(":", pa.large_string()))


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
    found = _found_records(rows, payments, refunds, prior)
    # The ledger this file writes: known now, so the caller may start writing it.
    new_ledger = Ledger(kind=rows["transaction_type"], settle_key=rows["settle_key"],
                        record_key=found.record_key,
                        original_reference_no=rows["merchant_invoice"],
                        amount=rows["gross"].abs(), line_no=rows["line_no"],
                        at=np.flatnonzero(found.settled.to_numpy(dtype=bool)))
    if on_ledger is not None:
        on_ledger(new_ledger)
    out, checks, refund_at = _records_side(rows, payments, refunds, found)
    before = _refunded_before(prior)
    findings = _findings(rows, out, checks, found, before, ctx)
    del checks
    out["category"], out["reason"], out["flags"] = _classified(rows.index, findings)
    missing = _missing_of(payments, refunds, found, refund_at, prior, later,
                          set(ctx.covered_dates))
    closures, still_open = _closed_items(out, rows, found, open_items, ctx)
    return _result(ctx, rows, out, missing, new_ledger, closures, still_open, payments,
                   refunds, found, before)


@dataclass(frozen=True)
class _Found:
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


def _found_records(rows: pd.DataFrame, payments: pd.DataFrame, refunds: pd.DataFrame,
                   prior: pd.DataFrame) -> _Found:
    """Each row's payment, its duplicates (later in this file, or settled by an earlier
    settlement date) and, for the refunds that are settled, their refund records."""
    valid = rows["invalid_reason"] == ""
    is_payment = valid & (rows["transaction_type"] == cat.PAYMENT)
    is_refund = valid & (rows["transaction_type"] == cat.REFUND)
    rows["settle_key"] = _settle_keys(rows)
    keyed = valid & (rows["settle_key"] != "")
    p, named, payment_at = _aligned(rows["merchant_invoice"], payments, "partner_reference_no",
                                    ["amount", "status", "transaction_date"])
    found_payment = pd.Series(named, index=rows.index) & valid
    dup_reason = _duplicate_reasons(rows, keyed, prior, payment_at)
    settled = valid & (dup_reason == "")
    taken = set(prior.loc[prior["kind"] == cat.REFUND, "record_key"]) - {""}
    refund_key, refund_rule = _match_refunds(rows, settled & is_refund, refunds, taken)
    record_key = _pick(is_payment | ~valid, _pick(found_payment, rows["merchant_invoice"], ""),
                       refund_key)
    return _Found(valid=valid, is_payment=is_payment, is_refund=is_refund, settled=settled,
                  found_payment=found_payment, found_refund=refund_key != "",
                  payment_at=payment_at, refund_key=refund_key, refund_rule=refund_rule,
                  record_key=record_key, dup_reason=dup_reason, payment_side=p)


def _records_side(rows: pd.DataFrame, payments: pd.DataFrame, refunds: pd.DataFrame,
                  found: _Found) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The result's rows (`out`: the record's key, amount, status and date, how it was
    found, the delta) and the checks' columns (`checks`: `out` with the records' side
    beside it), and the refunds' positions in their table."""
    r, _, refund_at = _aligned(
        _pick(found.found_refund, found.refund_key, "\x00"), refunds, "partner_refund_no",
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
    out["match_rule"] = _pick(rows["transaction_type"] == cat.REFUND, found.refund_rule,
                              _pick(found.found_payment, "MerchantInvoice", "")
                              ).astype("category")
    out["record_key"] = found.record_key
    out["record_amount"] = record["payment_amount"].where(is_payment_row,
                                                          record["refund_amount"])
    out["record_status"] = _pick(is_payment_row, record["payment_status"],
                                 record["refund_status"]).astype("category")
    out["record_date"] = record["payment_date"].where(is_payment_row, record["refund_date"])
    gross = out["gross"]
    out["delta"] = (gross - record["payment_amount"]).where(
        is_payment_row, gross.abs() - record["refund_amount"]).astype("Int64")
    # The checks read the file's columns and the records' side together.
    return out, pd.concat([out, record], axis=1), refund_at


def _findings(rows: pd.DataFrame, out: pd.DataFrame, checks: pd.DataFrame, found: _Found,
              before: dict[str, int], ctx: MatchContext) -> dict[str, _Finding]:
    """Each category's finding, in precedence order."""
    findings = {cat.INVALID_ROW: _Finding.of(rows["invalid_reason"]),
                cat.DUPLICATE_SETTLEMENT: _Finding.of(found.dup_reason),
                cat.MISSING_IN_RECORDS: _missing_in_records(checks, found),
                cat.STATUS_MISMATCH: _status_mismatch(checks, found)}
    findings[cat.AMOUNT_MISMATCH] = _built(
        checks, found.pay_ok & (checks["gross"] != checks["payment_amount"]).fillna(False)
        .astype(bool),
        lambda c: ["GrossAmount ", c.amount("gross"), " ≠ payment amount ",
                   c.amount("payment_amount"), " (delta ", c.amount("delta"), ")"])
    findings[cat.REFUND_MISMATCH] = _refund_mismatch(rows, checks, found, before,
                                                     ctx.refund_window_days)
    # Timing: matched, but the record's date is not covered by this settlement date.
    record_date, day = out["record_date"], ctx.settlement_date
    matched = found.pay_ok | found.ref_ok
    off_window = matched & record_date.notna() & ~record_date.isin(list(ctx.covered_dates))
    findings[cat.TIMING_DIFFERENCE] = _built(
        out, off_window,
        lambda c: ["record date ", c.per_value("record_date", str),
                   " is covered by settlement date ",
                   c.per_value("record_date", lambda d: str(ctx.calendar.next_working_day(d))),
                   f", not {day}"])
    findings[cat.FEE_MISMATCH] = _fee_findings(out, matched, found.is_payment, ctx.fee_rules)
    return findings


def _missing_in_records(checks: pd.DataFrame, found: _Found) -> _Finding:
    missing_payment = found.settled & ~found.found_payment
    return (
        _built(checks, found.pay_rows & missing_payment,
               lambda c: ["no payment with partnerReferenceNo ", c.text("merchant_invoice")])
        + _built(checks, found.ref_rows & missing_payment,
                 lambda c: ["no payment ", c.text("merchant_invoice"), " to refund"])
        + _built(checks, found.ref_rows & found.found_payment & ~found.found_refund,
                 lambda c: ["no refund record for ", c.labelled("RefundInvoice ", "refund_invoice"),
                            c.labelled("OVOReferenceNo ", "ovo_reference_no"),
                            "nor an unmatched refund of ", c.amount("gross", absolute=True),
                            " on payment ", c.text("merchant_invoice")])
    )


def _status_mismatch(checks: pd.DataFrame, found: _Found) -> _Finding:
    payment_unpaid = ~checks["payment_status"].isin(cat.PAID_STATUSES)
    refund_undone = ~checks["refund_status"].isin(cat.DONE_REFUND_STATUSES)
    return (
        _built(checks, found.pay_ok & payment_unpaid,
               lambda c: ["payment status ", c.per_value("payment_status", cat.status_label),
                          ", expected 00 Success or 04 Refunded"])
        + _built(checks, found.ref_ok & refund_undone,
                 lambda c: ["refund status ", c.per_value("refund_status", cat.status_label),
                            ", expected 00 Success"])
        + _built(checks, found.ref_ok & ~refund_undone & payment_unpaid,
                 lambda c: ["original payment status ",
                            c.per_value("payment_status", cat.status_label)])
    )


def _refunded_before(prior: pd.DataFrame) -> dict[str, int]:
    """What earlier settlement dates refunded, per original payment."""
    prior_refunds = prior.loc[(prior["kind"] == cat.REFUND) & prior["amount"].notna()]
    return {str(k): int(v) for k, v in prior_refunds["amount"].astype("int64").abs()
            .groupby(prior_refunds["original_reference_no"]).sum().items()}


def _refund_mismatch(rows: pd.DataFrame, checks: pd.DataFrame, found: _Found,
                     before: dict[str, int], window: int) -> _Finding:
    """Refund rows whose amount, owner, cumulative total or timing disagree."""
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
    # objects, and a million of them made timestamps took longer than every other check.
    matched_refunds = np.flatnonzero(ref_ok.to_numpy(dtype=bool))
    days_after = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    days_after.iloc[matched_refunds] = (
        pd.to_datetime(checks["refund_date"].take(matched_refunds))
        - pd.to_datetime(checks["payment_date"].take(matched_refunds))).dt.days.to_numpy()
    checks["days_after"] = days_after
    # One list of (condition, reason): a row is flagged where any condition holds, and its
    # reason says each that holds, so the rule cannot find a row it does not explain.
    return _all_that_hold(checks, [
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


def _classified(index: pd.Index, findings: dict[str, _Finding]
                ) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Each row's category (the first finding in precedence order), its reason, and the
    other findings as flags."""
    names = cat.ROW_CATEGORIES[:-1]
    flagged = np.zeros(len(index), dtype=bool)
    for name in names:
        flagged[findings[name].positions] = True
    rank = np.cumsum(flagged) - 1  # a flagged row's place among the flagged ones
    hits = np.zeros((int(flagged.sum()), len(names)), dtype=bool)
    texts = np.full(hits.shape, "", dtype=object)
    for column, name in enumerate(names):
        at = rank[findings[name].positions]
        hits[at, column] = True
        texts[at, column] = findings[name].texts
    # Whole columns where each row has one value; a loop only over the rows with flags.
    first = hits.argmax(axis=1)  # the first finding in precedence order
    categories = np.array(names, dtype=object)[first].tolist()
    reasons = texts[np.arange(len(first)), first].tolist()
    extras = [""] * len(first)
    for at in np.flatnonzero(hits.sum(axis=1) > 1).tolist():
        extras[at] = "; ".join(f"{names[i]}: {texts[at, i]}"
                               for i in np.flatnonzero(hits[at])[1:].tolist())
    return (_categorical_texts(index, flagged, categories, other=cat.MATCHED),
            _texts(index, flagged, reasons), _texts(index, flagged, extras))


def _missing_of(payments: pd.DataFrame, refunds: pd.DataFrame, found: _Found,
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


def _closed_items(out: pd.DataFrame, rows: pd.DataFrame, found: _Found,
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
            payments: pd.DataFrame, refunds: pd.DataFrame, found: _Found,
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
