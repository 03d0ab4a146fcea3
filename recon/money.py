"""Exact money: integer minor units (1 IDR = 100 sen) and Decimal, never floats."""

from __future__ import annotations

import decimal
from decimal import Decimal

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
