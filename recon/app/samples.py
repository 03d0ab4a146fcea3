"""Regenerate sample_reports/: a sample settlement file (CSV and XLSX), the records it is
reconciled against, and the summary.json and workbook the run produces.

    python -m recon.app.samples sample_reports
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from recon.app.demo import DEMO_DATES, MERCHANT, generate, write_demo
from recon.formats.filegen import write_settlement_xlsx

SAMPLE_DATE = DEMO_DATES[0]
STEM = f"OVO_SETTLEMENT_{MERCHANT}_{SAMPLE_DATE:%Y%m%d}"
PER_DAY = 110


def _write_records(data: Any, folder: Path) -> None:
    with (folder / "ovo_payments.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["partner_reference_no", "reference_no", "merchant_id", "store_id",
                         "amount", "pay_option", "status", "transaction_time"])
        for p in data.payments:
            writer.writerow([p.ref, p.ovo_ref, MERCHANT, p.store, f"{p.amount:.2f}", p.option,
                             p.status, p.time.isoformat()])
    with (folder / "ovo_refunds.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["partner_refund_no", "original_partner_reference_no", "refund_no",
                         "refund_amount", "refund_time", "status"])
        for r in data.refunds:
            writer.writerow([r.ref, r.original.ref, r.refund_no, f"{r.amount:.2f}",
                             r.time.isoformat(), r.status])


def build_samples(target: Path) -> dict[str, Any]:
    """Write the samples into `target`; returns the run's summary."""
    from recon.app.runner import run_dates

    data = generate(per_day=PER_DAY)
    data.files = {SAMPLE_DATE: data.files[SAMPLE_DATE]}
    with tempfile.TemporaryDirectory() as work:
        config = write_demo(Path(work), data)
        outcome = run_dates({}, str(config), None, [SAMPLE_DATE])[0]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(work) / "inbox" / f"{STEM}.csv", target / f"{STEM}.csv")
        write_settlement_xlsx(data.files[SAMPLE_DATE], target / f"{STEM}.xlsx")
        _write_records(data, target)
        report = target / MERCHANT / SAMPLE_DATE.isoformat()
        if report.exists():
            shutil.rmtree(report)
        report.mkdir(parents=True)
        summary = {k: v for k, v in outcome["summary"].to_dict().items() if k != "run"}
        (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        shutil.copyfile(outcome["paths"]["workbook"], report / Path(outcome["paths"]["workbook"])
                        .name)
    return summary


if __name__ == "__main__":
    build_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "sample_reports"))
