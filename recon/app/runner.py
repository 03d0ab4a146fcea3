"""Runs of the reconciliation flows in this process, for the commands (`recon.app.cli`), the
demo and the samples: one flow run per (date, merchant), their outcomes as values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from recon.core import categories as cat
from recon.core.errors import ConfigError, ReconError
from recon.core.money import format_amount
from recon.report.summary import Summary

if TYPE_CHECKING:
    from prefect.states import State


def print_summary_table(summary: Summary, paths: dict[str, str]) -> None:
    print()
    print(f"Merchant {summary.merchant_id}  settlement date {summary.settlement_date}  "
          f"covers {', '.join(d.isoformat() for d in summary.covered_dates)}")
    print(f"File {summary.file.name}: {summary.file.rows:,} rows")
    width = max(len(name) for name in cat.ALL_CATEGORIES)
    print(f"  {'category':<{width}}  {'count':>9}  {'GrossAmount':>18}")
    for name in cat.ALL_CATEGORIES:
        print(f"  {name:<{width}}  {summary.counts[name]:>9,}  "
              f"{format_amount(summary.amounts[name]):>18}")
    print(f"Open items from earlier dates: {summary.open_items} "
          f"(closed by this file: {summary.closed_items})")
    for label in ("workbook", "summary", "email"):
        if label in paths:
            print(f"  {label:<8} {paths[label]}")


@dataclass
class DateRun:
    day: dt.date
    merchant_id: str
    outcome: dict[str, Any] | None = None
    error: ReconError | None = None
    skipped: str = ""


def state_error(state: State) -> ReconError:
    """The error a failed flow run's state carries as its data; a run that crashed or was
    cancelled (no ReconError in it) is an ERROR with the state's message."""
    data = state.result(raise_on_failure=False) if state.is_failed() else None
    if isinstance(data, ReconError):
        return data
    return ReconError(" ".join(str(state.message or "the run failed").split()))


def _date_run(day: dt.date, merchant: str | None, *, error: ReconError | None, skipped: str,
              outcome: Any) -> DateRun:
    """One (date, merchant) run's line: failed (its error), skipped (not a working day) or
    reconciled (the outcome names the merchant the file was for)."""
    run = DateRun(day, merchant or "")
    if error is not None:
        run.error = error
    elif skipped:
        run.skipped = skipped
    else:
        run.outcome = cast(dict[str, Any], outcome)
        run.merchant_id = run.outcome["summary"].merchant_id
    return run


def run_many(overrides: dict[str, Any], config_file: str | None,
             merchants: Sequence[str | None], days: Sequence[dt.date]) -> list[DateRun]:
    """One flow run per (date, merchant), dates in order, all in this process; a failure
    is recorded and the next run goes on."""
    from pipelines.flows import reconcile_settlement

    runs = []
    for day in days:
        for merchant in merchants:
            state = reconcile_settlement(settlement_date=day.isoformat(), merchant_id=merchant,
                                         overrides=overrides, config_file=config_file,
                                         return_state=True)
            done = state.is_completed()
            outcome = state.result() if done else None
            skipped = (str(state.message) if isinstance(outcome, dict)
                       and outcome.get("skipped") else "")
            runs.append(_date_run(day, merchant, error=None if done else state_error(state),
                                  skipped=skipped, outcome=None if skipped else outcome))
    return runs


def run_fan_out(overrides: dict[str, Any], config_file: str | None,
                merchants: Sequence[str | None], days: Sequence[dt.date],
                address: str | None, workers: int | None) -> list[DateRun]:
    """The same runs over a Dask cluster (Prefect's DaskTaskRunner): files fetched and
    read in parallel, each merchant's dates settled in order, merchants in parallel."""
    try:
        from pipelines.flows import dask_runner, reconcile_fan_out

        runner = dask_runner(address, workers)
    except ImportError as exc:
        raise ConfigError(f"--dask-address/--dask-workers need prefect-dask ({exc})") from exc
    flow = reconcile_fan_out.with_options(task_runner=runner)
    state = flow(settlement_dates=[d.isoformat() for d in days], merchant_ids=list(merchants),
                 overrides=overrides, config_file=config_file, return_state=True)
    if not state.is_completed():
        raise state_error(state)
    runs = [_date_run(dt.date.fromisoformat(entry["day"]), entry["merchant"],
                      error=entry.get("error") or None, skipped=entry.get("skipped", ""),
                      outcome=entry.get("outcome"))
            for entry in cast(list[dict[str, Any]], state.result())]
    return sorted(runs, key=lambda r: (r.day, r.merchant_id))


def run_dates(overrides: dict[str, Any], config_file: str | None,
              merchant_id: str | None, days: Sequence[dt.date]) -> list[dict[str, Any]]:
    """Run the flow for each date in this process; raises ReconError on the first failure."""
    outcomes = []
    for run in run_many(overrides, config_file, [merchant_id], days):
        if run.error is not None:
            raise run.error
        if run.outcome is not None:
            outcomes.append(run.outcome)
    return outcomes
