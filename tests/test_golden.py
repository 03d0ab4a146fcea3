"""Golden cases: settlement files + records + handwritten expected summaries, run through
the real Prefect flow on SQLite and PostgreSQL, one settlement date after another."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from recon.app.runner import run_dates
from recon.core.calendar import WIB
from recon.store.engine import init_db, make_engine
from recon.store.records import insert_records

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "case.toml").exists())


def _time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=WIB)


def load_case_records(case: Path, database_url: str) -> None:
    engine = make_engine(database_url)
    init_db(engine)
    with (case / "payments.csv").open() as handle:
        payments = [{**r, "merchant_id": "M001", "amount": Decimal(r["amount"]),
                     "transaction_time": _time(r["transaction_time"])}
                    for r in csv.DictReader(handle)]
    with (case / "refunds.csv").open() as handle:
        refunds = [{**r, "refund_amount": Decimal(r["refund_amount"]),
                    "refund_time": _time(r["refund_time"])} for r in csv.DictReader(handle)]
    insert_records(engine, payments, refunds)
    engine.dispose()


def subset(actual: Any, expected: Any) -> Any:
    """The part of `actual` that `expected` names (dicts compared key by key)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {key: subset(actual.get(key), value) for key, value in expected.items()}
    return actual


def run_case(name: str, database_url: str, tmp_path: Path,
             config: dict[str, Any] | None = None) -> list[tuple[Path, dict]]:
    case = GOLDEN / name
    spec = tomllib.loads((case / "case.toml").read_text())
    load_case_records(case, database_url)
    source = tmp_path / "inbox"
    shutil.copytree(case / "inbox", source)
    overrides = {"database_url": database_url, "source": str(source),
                 "report_dir": str(tmp_path / "reports"), "outbox": str(tmp_path / "outbox"),
                 "archive_dir": str(tmp_path / "archive"), **spec.get("config", {}),
                 **(config or {})}
    results = []
    for number, day in enumerate(spec["runs"], start=1):
        outcome = run_dates(overrides, None, spec["merchant"], [dt.date.fromisoformat(day)])[0]
        written = json.loads(Path(outcome["paths"]["summary"]).read_text())
        assert written == outcome["summary"].to_dict()
        results.append((case / "expected" / f"{number}_{day}.json", written))
    return results


@pytest.mark.parametrize("name", CASES)
def test_golden_case(name: str, database_url: str, tmp_path: Path, prefect_api: str,
                     request: pytest.FixtureRequest) -> None:
    update = request.config.getoption("--update-golden")
    for expected_path, summary in run_case(name, database_url, tmp_path):
        if not expected_path.exists():
            if not update:
                pytest.fail(f"{expected_path} is missing (write it by hand, or run pytest "
                            "--update-golden to create it from this run and review it)")
            expected_path.write_text(json.dumps(summary, indent=2) + "\n")
            continue
        expected = json.loads(expected_path.read_text())
        assert subset(summary, expected) == expected, expected_path.name
        counted = sum(v for k, v in summary["counts"].items() if k != "MISSING_IN_SETTLEMENT")
        assert counted == summary["file"]["rows"]


@pytest.mark.parametrize("name", CASES)
def test_golden_case_with_every_lookup_joined_by_duckdb(
        name: str, tmp_path: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same cases with the key lookups that a large file sends to DuckDB sent there at
    any size (the cases are small): the summaries are the handwritten ones."""
    from recon.core import schemas
    monkeypatch.setattr(schemas, "JOIN_FROM", 0)
    for expected_path, summary in run_case(name, f"sqlite:///{tmp_path / 'recon.db'}",
                                           tmp_path):
        expected = json.loads(expected_path.read_text())
        assert subset(summary, expected) == expected, expected_path.name


@pytest.mark.parametrize("name", CASES)
def test_golden_case_run_in_parts_on_disk(name: str, database_url: str, tmp_path: Path,
                                          prefect_api: str) -> None:
    """The same cases, each date run in 3 parts on disk (`recon.inparts.run`): the handwritten
    summaries, date after date; each run's parts are gone when it ends."""
    spill = tmp_path / "spill"
    for expected_path, summary in run_case(name, database_url, tmp_path,
                                           {"parts": "3", "spill_dir": str(spill)}):
        expected = json.loads(expected_path.read_text())
        assert subset(summary, expected) == expected, expected_path.name
        assert list(spill.iterdir()) == []
