"""summary.json: the run's figures as plain data (SPEC section 6)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from recon.core import categories as cat
from recon.core.errors import ConfigError
from recon.core.money import format_amount
from recon.core.result import ReconResult
from recon.system.paths import within


def build_summary(result: ReconResult, file_name: str, sha256: str,
                  file_format: str, trailer: bool) -> dict[str, Any]:
    """Deterministic figures for one run: the same inputs give the same dict."""
    exception_amount = sum(abs(v) for c, v in result.amounts.items() if c != cat.MATCHED)
    return {
        "merchant_id": result.merchant_id,
        "settlement_date": result.settlement_date.isoformat(),
        "covered_transaction_dates": [d.isoformat() for d in result.covered_dates],
        # Every row has one category (a result of parts may hold the flagged rows alone).
        "file": {"name": file_name, "sha256": sha256,
                 "rows": sum(result.counts[name] for name in cat.ROW_CATEGORIES),
                 "format": file_format, "trailer": trailer},
        "counts": dict(result.counts),
        "amounts": {name: format_amount(value) for name, value in result.amounts.items()},
        "totals": {name: format_amount(value) for name, value in result.totals.items()},
        "records_totals": {name: None if value is None else format_amount(value)
                           for name, value in result.record_totals.items()},
        "exceptions": result.exceptions,
        "exception_amount": format_amount(exception_amount),
        "open_items": len(result.open_items),
        "closed_items": len(result.closures),
    }


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".json.tmp")
    temp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temp.replace(path)
    return path


def report_folder(report_dir: Path, merchant_id: str, settlement_date: str) -> Path:
    return within(report_dir, merchant_id, settlement_date)


def report_stem(merchant_id: str, day: dt.date) -> str:
    """The name the workbook, its overflow CSVs and the email files start with."""
    return f"recon_{merchant_id}_{day:%Y%m%d}"


def find_report(report_dir: Path, merchant_id: str, day: dt.date) -> tuple[dict[str, Any], Path]:
    """summary.json and the workbook of a reconciled date (the only merchant if none given)."""
    if not merchant_id:
        found = sorted(p.parent.name for p in report_dir.glob(f"*/{day.isoformat()}"))
        if len(found) != 1:
            raise ConfigError(f"{'no report' if not found else 'several merchants'} for {day} "
                              f"in {report_dir}: choose with --merchant")
        merchant_id = found[0]
    folder = report_folder(report_dir, merchant_id, day.isoformat())
    summary_path = folder / "summary.json"
    workbook = folder / f"{report_stem(merchant_id, day)}.xlsx"
    if not summary_path.exists() or not workbook.exists():
        raise ConfigError(f"{merchant_id} {day} has not been reconciled: no report in {folder}")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{summary_path} cannot be read ({exc}); reconcile the date again "
                          "to write it anew") from exc
    if not isinstance(summary, dict) or "merchant_id" not in summary:
        raise ConfigError(f"{summary_path} is not a run's summary; reconcile the date again "
                          "to write it anew")
    return summary, workbook
