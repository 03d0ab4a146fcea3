"""INVALID_ROW: a row the reader could not take (its reason given by the reader).
"""

from __future__ import annotations

from recon.core import categories as cat
from recon.core.found import Evidence
from recon.core.reasons import Finding

CATEGORY = cat.INVALID_ROW


def finding(given: Evidence) -> Finding:
    return Finding.of(given.rows["invalid_reason"])
