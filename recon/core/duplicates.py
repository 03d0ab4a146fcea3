"""Keys settled twice: on an earlier settlement date, or on an earlier line of this file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon.core import categories as cat
from recon.core.reasons import text_column
from recon.core.schemas import positions_in, text_array


def duplicate_reasons(rows: pd.DataFrame, keyed: pd.Series, prior: pd.DataFrame,
                      payment_at: np.ndarray) -> pd.Series:
    """DUPLICATE_SETTLEMENT reasons: a key settled on an earlier date (its earliest
    settlement), or a later row of this file with a key an earlier line already settled.
    `payment_at`: each row's payment among the records (its position, -1 where none)."""
    positions = np.flatnonzero(keyed.to_numpy(dtype=bool))
    if not len(positions):
        return text_column(rows.index, positions, [])
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
    return text_column(rows.index, positions[said_at], list(texts[said_at]))


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
