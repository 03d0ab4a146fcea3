"""Exact money helpers: the whole-column forms agree with the one-value forms."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.core.money import format_amount, minor_text, round_minor, round_minor_array
from recon.core.schemas import text_array, text_isin

MODES = st.sampled_from(["half_up", "half_even", "down", "up"])
RATES = st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(-10**13, 10**13), min_size=1, max_size=30), RATES, MODES,
       st.sampled_from([0, 2]))
def test_round_minor_array_is_round_minor_per_value(values: list[int], rate: Decimal,
                                                    mode: str, decimals: int) -> None:
    got = round_minor_array(np.array(values, dtype=np.int64), rate, mode, decimals)
    assert [int(v) for v in got] == [round_minor(v, rate, mode, decimals) for v in values]


def test_round_minor_array_leaves_int64_when_a_product_could_overflow() -> None:
    huge = np.array([2**62, -(2**62) + 1], dtype=np.int64)
    rate = Decimal("0.12345")
    got = round_minor_array(huge, rate, "half_even", 2)
    assert [int(v) for v in got] == [round_minor(int(v), rate, "half_even", 2) for v in huge]


def test_halves_round_by_the_mode() -> None:
    values = np.array([50, 150, -50, 250], dtype=np.int64)  # × 0.01 = 0.5, 1.5, -0.5, 2.5
    assert round_minor_array(values, Decimal("0.01"), "half_up", 2).tolist() == [1, 2, -1, 3]
    assert round_minor_array(values, Decimal("0.01"), "half_even", 2).tolist() == [0, 2, 0, 2]


@given(st.lists(st.text(max_size=5), max_size=20), st.lists(st.text(max_size=5), max_size=20))
def test_text_isin_is_isin(values: list[str], keys: list[str]) -> None:
    series = pd.Series(values, dtype="str")
    assert text_isin(series, keys).tolist() == [v in set(keys) for v in values]
    assert text_isin(series, pd.Series(keys, dtype="str")).tolist() == [v in set(keys)
                                                                       for v in values]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.none() | st.integers(-10**15, 10**15), max_size=30))
def test_minor_text_is_format_amount_with_nulls_kept(values: list[int | None]) -> None:
    got = minor_text(pd.Series(values, dtype="Int64")).to_pylist()
    assert got == [None if v is None else format_amount(v) for v in values]


@given(st.lists(st.sampled_from(["MATCHED", "", "é ü", "MerchantInvoice"]), max_size=30))
def test_a_categorical_text_column_reads_as_its_texts(values: list[str]) -> None:
    """The match keeps a few labels over millions of rows as categoricals; the workbook and
    the store read them as the texts they stand for."""
    labels = pd.Series(values, dtype="str").astype("category")
    assert text_array(labels).to_pylist() == values
    assert text_isin(labels, ["MATCHED"]).tolist() == [v == "MATCHED" for v in values]
