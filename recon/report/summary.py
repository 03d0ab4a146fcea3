"""summary.json: the run's figures as plain data (SPEC section 6)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recon.core import categories as cat
from recon.core.cases import CaseFigures
from recon.core.errors import ConfigError
from recon.core.money import format_amount, to_minor
from recon.core.result import ReconResult
from recon.system.paths import within


@dataclass(frozen=True)
class FileFigures:
    name: str
    sha256: str
    rows: int  # data rows, every one in one category
    format: str
    trailer: bool


@dataclass(frozen=True)
class RunFigures:
    """The run that wrote the figures; `run_id` and `finished_at` once it is committed."""

    attempt: int
    rerun: bool
    started_at: dt.datetime
    run_id: int | None = None
    finished_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {} if self.run_id is None else {"run_id": self.run_id}
        data |= {"attempt": self.attempt, "rerun": self.rerun,
                 "started_at": self.started_at.isoformat()}
        if self.finished_at is not None:
            data["finished_at"] = self.finished_at.isoformat()
        return data


@dataclass(frozen=True)
class Summary:
    """A run's figures (SPEC section 6): amounts in minor units; summary.json is
    `to_dict`, and `from_dict` reads it back."""

    merchant_id: str
    settlement_date: dt.date
    covered_dates: tuple[dt.date, ...]
    file: FileFigures
    counts: dict[str, int]  # every category, zeros included
    amounts: dict[str, int]  # GrossAmount per category
    totals: dict[str, int]  # the file's gross, mdr, tax and net
    records_totals: dict[str, int | None]  # what the records say, for the covered dates
    exceptions: int
    exception_amount: int
    open_items: int  # earlier MISSING_IN_SETTLEMENT items still open after this run
    closed_items: int
    run: RunFigures | None = None
    cases: CaseFigures | None = None  # the merchant's exception cases after the run

    def with_run(self, run: RunFigures, cases: CaseFigures | None = None) -> Summary:
        return dataclasses.replace(self, run=run, cases=cases or self.cases)

    def to_dict(self) -> dict[str, Any]:
        """summary.json's content: amounts as exact decimal text, dates as ISO text."""
        data: dict[str, Any] = {
            "merchant_id": self.merchant_id,
            "settlement_date": self.settlement_date.isoformat(),
            "covered_transaction_dates": [d.isoformat() for d in self.covered_dates],
            "file": dataclasses.asdict(self.file),
            "counts": dict(self.counts),
            "amounts": {name: format_amount(value) for name, value in self.amounts.items()},
            "totals": {name: format_amount(value) for name, value in self.totals.items()},
            "records_totals": {name: None if value is None else format_amount(value)
                               for name, value in self.records_totals.items()},
            "exceptions": self.exceptions,
            "exception_amount": format_amount(self.exception_amount),
            "open_items": self.open_items,
            "closed_items": self.closed_items,
        }
        if self.run is not None:
            data["run"] = self.run.to_dict()
        if self.cases is not None:
            data["cases"] = self.cases.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """A summary.json read back; KeyError, TypeError or ValueError where it is not one."""
        run, figures = data.get("run"), data.get("cases")

        def moment(text: str | None) -> dt.datetime | None:
            return None if text is None else dt.datetime.fromisoformat(text)

        return cls(
            merchant_id=str(data["merchant_id"]),
            settlement_date=dt.date.fromisoformat(data["settlement_date"]),
            covered_dates=tuple(dt.date.fromisoformat(d)
                                for d in data["covered_transaction_dates"]),
            file=FileFigures(**data["file"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            amounts={str(k): to_minor(v) for k, v in data["amounts"].items()},
            totals={str(k): to_minor(v) for k, v in data["totals"].items()},
            records_totals={str(k): None if v is None else to_minor(v)
                            for k, v in data["records_totals"].items()},
            exceptions=int(data["exceptions"]),
            exception_amount=to_minor(data["exception_amount"]),
            open_items=int(data["open_items"]),
            closed_items=int(data["closed_items"]),
            run=None if run is None else RunFigures(
                attempt=int(run["attempt"]), rerun=bool(run["rerun"]),
                started_at=dt.datetime.fromisoformat(run["started_at"]),
                run_id=run.get("run_id"), finished_at=moment(run.get("finished_at"))),
            cases=None if figures is None else CaseFigures(
                opened=int(figures["opened"]), resolved=int(figures["resolved"]),
                open_by_age={str(bucket): (int(v["cases"]), to_minor(v["amount_at_risk"]))
                             for bucket, v in figures["open_by_age"].items()},
                overdue_acknowledgements=int(figures["overdue_acknowledgements"]),
                overdue_claims=int(figures["overdue_claims"])),
        )


def build_summary(result: ReconResult, file_name: str, sha256: str,
                  file_format: str, trailer: bool) -> Summary:
    """Deterministic figures for one run: the same inputs give the same summary."""
    return Summary(
        merchant_id=result.merchant_id,
        settlement_date=result.settlement_date,
        covered_dates=tuple(result.covered_dates),
        # Every row has one category (a result of parts may hold the flagged rows alone).
        file=FileFigures(name=file_name, sha256=sha256,
                         rows=sum(result.counts[name] for name in cat.ROW_CATEGORIES),
                         format=file_format, trailer=trailer),
        counts=dict(result.counts),
        amounts=dict(result.amounts),
        totals=dict(result.totals),
        records_totals=dict(result.record_totals),
        exceptions=result.exceptions,
        exception_amount=sum(abs(v) for c, v in result.amounts.items() if c != cat.MATCHED),
        open_items=len(result.open_items),
        closed_items=len(result.closures),
    )


def write_summary(summary: Summary, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".json.tmp")
    text = json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n"
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)
    return path


def report_folder(report_dir: Path, merchant_id: str, settlement_date: str) -> Path:
    return within(report_dir, merchant_id, settlement_date)


def report_stem(merchant_id: str, day: dt.date) -> str:
    """The name the workbook, its overflow CSVs and the email files start with."""
    return f"recon_{merchant_id}_{day:%Y%m%d}"


def find_report(report_dir: Path, merchant_id: str, day: dt.date) -> tuple[Summary, Path]:
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
    try:
        return Summary.from_dict(summary), workbook
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{summary_path} is not a run's summary ({exc!r} missing or wrong); "
                          "reconcile the date again to write it anew") from exc
