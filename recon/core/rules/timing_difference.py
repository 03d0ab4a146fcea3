"""TIMING_DIFFERENCE: matched, but the record's date is not covered by this settlement
date.
"""

from __future__ import annotations

from recon.core import categories as cat
from recon.core.found import Evidence
from recon.core.reasons import Finding, all_that_hold

CATEGORY = cat.TIMING_DIFFERENCE


def finding(given: Evidence) -> Finding:
    ctx, record_date = given.ctx, given.out["record_date"]
    off_window = (given.found.matched & record_date.notna()
                  & ~record_date.isin(list(ctx.covered_dates)))
    return all_that_hold(given.out, [
        (off_window,
         lambda c: ["record date ", c.per_value("record_date", str),
                    " is covered by settlement date ",
                    c.per_value("record_date", lambda d: str(ctx.calendar.next_working_day(d))),
                    f", not {ctx.settlement_date}"]),
    ])
