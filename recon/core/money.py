"""Exact money: integer minor units (1 IDR = 100 sen) and Decimal, never floats."""

from __future__ import annotations

import decimal
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MINOR_PER_UNIT = 100


def to_minor(amount: Decimal | int | str) -> int:
    """Decimal('10000.50') -> 1000050. Raises ValueError beyond two decimal places."""
    value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    minor = value * MINOR_PER_UNIT
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} has more than two decimal places")
    return int(minor)


def from_minor(minor: int) -> Decimal:
    return (Decimal(int(minor)) / MINOR_PER_UNIT).quantize(Decimal("0.01"))


def format_amount(minor: int | None) -> str:
    """Plain decimal string with two places: 123450 -> '1234.50'."""
    if minor is None:
        return ""
    return str(from_minor(minor))


def format_idr(minor: int) -> str:
    """Human form with thousands separators: 123450000 -> '1,234,500.00'."""
    return f"{from_minor(minor):,.2f}"


def round_minor(numerator: int, rate: Decimal, rounding: str, decimals: int) -> int:
    """round(numerator × rate) to `decimals` places, where numerator is in minor units.

    Computed in Decimal with the named rounding mode (half_up = away from zero on .5).
    """
    mode = {
        "half_up": decimal.ROUND_HALF_UP,
        "half_even": decimal.ROUND_HALF_EVEN,
        "down": decimal.ROUND_DOWN,
        "up": decimal.ROUND_UP,
    }[rounding]
    quantum = Decimal(1).scaleb(2 - decimals)  # in minor units: 1 for cents, 100 for IDR
    product = Decimal(numerator) * rate
    steps = (product / quantum).to_integral_value(rounding=mode)
    return int(steps * quantum)


#: Values rounded at once by `round_minor_array`: its working arrays are several times
#: the values' own, 8 MB each at this size instead of 80 MB each at ten million values.
ROUND_BLOCK_ROWS = 1 << 20


def round_minor_array(numerators: np.ndarray, rate: Decimal, rounding: str,
                      decimals: int) -> np.ndarray:
    """`round_minor` over an array of minor-unit integers, exactly, in integer arithmetic,
    a block of ROUND_BLOCK_ROWS values at a time.

    The rate is taken as its exact fraction p/q; int64 is used when no product can
    overflow, Python integers otherwise. Same result as `round_minor` element by element.
    """
    values = np.asarray(numerators)
    if len(values) <= ROUND_BLOCK_ROWS:
        return _round_minor_block(values, rate, rounding, decimals)
    return np.concatenate([
        _round_minor_block(values[start:start + ROUND_BLOCK_ROWS], rate, rounding, decimals)
        for start in range(0, len(values), ROUND_BLOCK_ROWS)])


def _round_minor_block(values: np.ndarray, rate: Decimal, rounding: str,
                       decimals: int) -> np.ndarray:
    if decimals > 2 or rounding not in ("half_up", "half_even", "down", "up"):
        return np.array([round_minor(int(v), rate, rounding, decimals) for v in values],
                        dtype=object if values.dtype == object else np.int64)
    num, den = rate.as_integer_ratio()
    quantum = 10 ** (2 - decimals)
    step = den * quantum
    largest = int(np.abs(values).max()) if len(values) else 0
    exact_in_int64 = largest * abs(num) * 2 + step < 2**62 and values.dtype != object
    work = values.astype(np.int64) if exact_in_int64 else values.astype(object)
    product = work * num
    sign = np.where(product < 0, -1, 1)
    magnitude = np.abs(product)
    whole, rest = magnitude // step, magnitude % step
    if rounding == "half_up":
        steps = whole + (rest * 2 >= step)
    elif rounding == "half_even":
        steps = whole + ((rest * 2 > step) | ((rest * 2 == step) & (whole % 2 == 1)))
    elif rounding == "down":
        steps = whole
    else:  # up
        steps = whole + (rest > 0)
    return sign * steps * quantum


def minor_text(minor: pa.Array | pd.Series | np.ndarray) -> pa.Array:
    """Integer minor units -> exact decimal text with two places, element-wise, in Arrow
    (a million values without a Python object each), nulls kept:
    [123450, -5, None] -> ['1234.50', '-0.05', None] (large_string)."""
    values = pa.array(minor, pa.int64())
    absolute = pc.abs(values)
    whole = pc.divide(absolute, MINOR_PER_UNIT)  # integer division
    cents = pc.subtract(absolute, pc.multiply(whole, MINOR_PER_UNIT))
    text = pa.large_string()
    sign = pc.if_else(pc.less(values, 0), pa.scalar("-", text), pa.scalar("", text))
    return pc.binary_join_element_wise(
        sign, pc.cast(whole, text), pa.scalar(".", text),
        pc.utf8_lpad(pc.cast(cents, text), 2, "0"), pa.scalar("", text))
