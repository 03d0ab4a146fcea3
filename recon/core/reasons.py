"""The vocabulary of the rules: a finding (the rows a check found and a reason for each),
reasons built a column at a time, and text columns made from the few rows found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon.core.money import format_amount, minor_text
from recon.core.schemas import arrow_text, label_column, text_array


@dataclass(frozen=True)
class Finding:
    """One check's reasons: the positions of the rows it found and a text for each. A
    million-row column of mostly empty texts per check would cost more than the check."""

    positions: np.ndarray
    texts: list[str]

    def __add__(self, other: Finding) -> Finding:  # checks of disjoint rows, as one
        return Finding(np.concatenate([self.positions, other.positions]),
                        self.texts + other.texts)

    @classmethod
    def of(cls, reasons: pd.Series) -> Finding:
        """The non-empty texts of a reason column."""
        found = np.flatnonzero((reasons != "").to_numpy(dtype=bool))
        return cls(found, reasons.take(found).tolist())


@dataclass(frozen=True)
class Subset:
    """The masked rows of a frame, a column at a time, as the parts of a reason text
    (`reason_finding`): Arrow arrays of the rows' texts, amounts and labels."""

    frame: pd.DataFrame
    at: np.ndarray

    def column(self, name: str) -> pd.Series:
        return self.frame[name].take(self.at)

    def text(self, name: str) -> pa.Array:
        return text_array(self.column(name))

    def amount(self, name: str, absolute: bool = False) -> pa.Array:
        """Amounts as exact decimal text, '?' where there is none (as `amount_text`)."""
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


def reason_finding(frame: pd.DataFrame, mask: pd.Series,
                   parts: Callable[[Subset], Sequence[str | pa.Array]]) -> Finding:
    """A reason text for each masked row, built column-wise: `parts` gives the text's
    fixed pieces and the masked rows' columns, joined in order."""
    found = np.flatnonzero(mask.to_numpy(dtype=bool))
    if not len(found):
        return Finding(found, [])
    pieces = [pa.scalar(part, pa.large_string()) if isinstance(part, str) else part
              for part in parts(Subset(frame, found))]
    joined = pc.binary_join_element_wise(*pieces, pa.scalar("", pa.large_string()))
    return Finding(found, joined.to_pylist())


#: One condition of a rule and its reason: a row is found where the mask holds, and its
#: reason is built from the pieces the function gives (`reason_finding`).
Rule = tuple[pd.Series, Callable[[Subset], Sequence[str | pa.Array]]]


def all_that_hold(frame: pd.DataFrame, rules: Sequence[Rule]) -> Finding:
    """One finding of several conditions, each with its reason (`reason_finding`): the
    rows where any holds, each with the reasons of those that hold, joined by '; ' in the
    rules' order, by position. A rule is one list of (condition, reason), so the rows it
    finds and the reasons it gives cannot disagree."""
    found = [reason_finding(frame, mask, parts) for mask, parts in rules]
    positions = np.concatenate([f.positions for f in found]).astype(np.int64)
    texts = [text for f in found for text in f.texts]
    if len(np.unique(positions)) == len(positions):  # no row holds two: no joining
        order = np.argsort(positions, kind="stable")
        return Finding(positions[order], [texts[at] for at in order.tolist()])
    said: dict[int, list[str]] = {}
    for at, text in zip(positions.tolist(), texts, strict=True):
        said.setdefault(at, []).append(text)
    joined = np.array(sorted(said), dtype=np.int64)
    return Finding(joined, ["; ".join(said[at]) for at in joined.tolist()])


def text_column(index: pd.Index, positions: np.ndarray, texts: Sequence[str],
                other: str = "") -> pd.Series:
    """A text column over `index`: `texts` at `positions` (a mask, or the positions in
    order), `other` elsewhere. Taken by Arrow from the few texts, not a million objects."""
    at = np.full(len(index), len(texts), dtype=np.int64)
    at[positions] = np.arange(len(texts))
    values = pa.array([*texts, other], pa.large_string())
    return pd.Series(arrow_text(values.take(pa.array(at))).array, index=index)


def categorical_column(index: pd.Index, positions: np.ndarray, texts: Sequence[str],
                       other: str) -> pd.Series:
    """`text_column` as a categorical column, made from its codes: a byte per row instead of
    the text and its 8-byte offset, for a column of a few distinct values."""
    names = sorted({*texts, other})
    code = {name: i for i, name in enumerate(names)}
    codes = np.full(len(index), code[other], dtype=np.int8 if len(names) < 128 else np.int32)
    codes[positions] = [code[text] for text in texts]
    return pd.Series(pd.Categorical.from_codes(codes, pd.Index(names, dtype="str")),
                     index=index)


def pick(mask: pd.Series, then: pd.Series | str, other: pd.Series | str) -> pd.Series:
    """`then` where `mask`, else `other`, for text columns: one Arrow if_else. pandas'
    `where` on Arrow text rewrites the column through a masked replace, ten times slower."""
    def arrow(value: pd.Series | str) -> pa.Array | pa.Scalar:
        return pa.scalar(value, pa.large_string()) if isinstance(value, str) else text_array(value)

    chosen = pc.if_else(pa.array(mask.to_numpy(dtype=bool)), arrow(then), arrow(other))
    return pd.Series(arrow_text(chosen).array, index=mask.index)


def amount_text(value: object) -> str:
    return "?" if value is None or pd.isna(value) else format_amount(int(value))  # type: ignore[call-overload]


def percent_text(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f}%"
