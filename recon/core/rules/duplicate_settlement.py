"""DUPLICATE_SETTLEMENT: a key settled on an earlier date or an earlier line of this file
(`recon.core.duplicates`).
"""

from __future__ import annotations

from recon.core import categories as cat
from recon.core.found import Evidence
from recon.core.reasons import Finding

CATEGORY = cat.DUPLICATE_SETTLEMENT


def finding(given: Evidence) -> Finding:
    return Finding.of(given.found.dup_reason)
