"""Write a settlement file to disk in parts (`recon.inparts.spill`), in a process of its own, and
print the seconds and the process's peak memory. The payment groups come from the file's
refund rows alone (no database): what the benchmark's data ties.

    .venv/bin/python bench/spill_file.py FILE [--parts 8] [--batch-mib 64] [--date 2026-11-30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from recon.core.schemas import LEDGER, REFUNDS, empty_frame
from recon.formats.ovo_v1 import OVO_V1
from recon.inparts.parts import payment_groups
from recon.inparts.spill import spill_settlement_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--batch-mib", type=int, default=64)
    parser.add_argument("--date", default="2026-11-30")
    args = parser.parse_args()

    def groups_of(refund_rows: pd.DataFrame) -> dict[str, str]:
        return payment_groups(refund_rows, empty_frame(REFUNDS), empty_frame(LEDGER))

    folder = Path(tempfile.mkdtemp(prefix="spill-", dir=args.file.parent)) / "parts"
    started = time.perf_counter()
    spilled = spill_settlement_file(args.file, OVO_V1, dt.date.fromisoformat(args.date),
                                    folder, args.parts, groups_of,
                                    batch_bytes=args.batch_mib << 20)
    seconds = time.perf_counter() - started
    on_disk = sum(path.stat().st_size for path in folder.iterdir())
    started = time.perf_counter()
    largest = max(len(spilled.rows(part)) for part in range(args.parts))
    read_back = time.perf_counter() - started
    shutil.rmtree(folder.parent)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.file.name}: {spilled.data_rows:,} rows in {args.parts} parts (largest "
          f"{largest:,}), batches of {args.batch_mib} MiB: {seconds:.1f} s, "
          f"{on_disk / 2**20:,.0f} MiB on disk; each part read back: {read_back:.1f} s in all; "
          f"peak {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
