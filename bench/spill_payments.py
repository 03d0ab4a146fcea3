"""Write a merchant's window of payments to disk in parts (`spill_window_payments`), in a
process of its own, against loading the window whole (`WindowLoad`); print the seconds
and the process's peak memory.

    .venv/bin/python bench/spill_payments.py DATABASE_URL [--merchant MB01]
        [--date 2026-11-30] [--parts 8] [--whole]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import tempfile
import time
from pathlib import Path

from recon.core.calendar import WorkingCalendar
from recon.inparts.load import spill_window_payments
from recon.store.engine import make_engine
from recon.store.load import WindowLoad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("--merchant", default="MB01")
    parser.add_argument("--date", default="2026-11-30")
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--whole", action="store_true", help="load the window whole instead")
    args = parser.parse_args()
    day = dt.date.fromisoformat(args.date)
    covered = WorkingCalendar().covered_dates(day)
    engine = make_engine(args.database)
    started = time.perf_counter()
    if args.whole:
        rows = len(WindowLoad(engine, args.merchant, day, covered, alone=True).result().payments)
        what = "whole"
    else:
        folder = Path(tempfile.mkdtemp(prefix="spill-payments-"))
        spilled = spill_window_payments(engine, args.merchant, covered, folder, args.parts, {})
        rows, what = sum(spilled.counts), f"in {args.parts} parts on disk"
        shutil.rmtree(folder)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"the window's payments {what}: {rows:,} in {seconds:.1f} s, peak {peak:,.0f} MiB")
    engine.dispose()


if __name__ == "__main__":
    main()
