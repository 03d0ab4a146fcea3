"""How fees on a settlement row are checked: the merchant's rates and OVO's rounding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

ROUNDING_MODES = {
    "half_up": "ROUND_HALF_UP",
    "half_even": "ROUND_HALF_EVEN",
    "down": "ROUND_DOWN",
    "up": "ROUND_UP",
}


@dataclass(frozen=True)
class FeeRules:
    """How fees on a settlement row are checked."""

    mdr_rates: Mapping[str, Decimal] = field(default_factory=dict)  # OVO_CASH/OVO_POINTS
    vat_rate: Decimal = Decimal("0.11")
    tolerance: Decimal = Decimal("0.01")
    rounding: str = "half_up"
    decimals: int = 2
