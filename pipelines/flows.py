"""The reconciliation flow: tasks wire library functions, one each; nothing is computed here."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import os
import re
import resource
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from pipelines.logs import install_log_filters, prepare_prefect_environment

prepare_prefect_environment()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.blocks.system import Secret  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run as prefect_runtime_flow_run  # noqa: E402
from prefect.schedules import Cron  # noqa: E402
from prefect.states import Completed, Failed, State  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

from recon.config import Settings, load_settings  # noqa: E402
from recon.core.calendar import WIB, WorkingCalendar, today_wib  # noqa: E402
from recon.core.cases import CaseFigures  # noqa: E402
from recon.core.cases import figures as case_figures  # noqa: E402
from recon.core.errors import (  # noqa: E402
    ConfigError,
    NotificationFailed,
    NotWorkingDay,
    OutputUnwritable,
    ReconError,
    RunLocked,
)
from recon.core.match import match_settlement  # noqa: E402
from recon.core.money import format_amount  # noqa: E402
from recon.core.result import Ledger, MatchContext, ReconResult  # noqa: E402
from recon.formats.ovo_v1 import get_profile  # noqa: E402
from recon.formats.reader import SettlementFile, read_settlement_file  # noqa: E402
from recon.inparts.load import Ties  # noqa: E402
from recon.inparts.run import (  # noqa: E402
    PartInputs,
    in_parts_folder,
    load_in_parts,
    match_in_parts_on_disk,
    spill_in_parts,
)
from recon.inparts.spill import SpilledFile  # noqa: E402
from recon.report.delivery import deliver  # noqa: E402
from recon.report.mail import build_alert_email, build_report_email  # noqa: E402
from recon.report.summary import (  # noqa: E402
    RunFigures,
    Summary,
    build_summary,
    report_folder,
    report_stem,
    write_summary,
)
from recon.report.workbook import WorkbookOptions, write_exception_workbook  # noqa: E402
from recon.sources.fetch import FetchedFile, fetch_settlement_file  # noqa: E402
from recon.store.engine import make_engine  # noqa: E402
from recon.store.history import RunRecord, next_attempt, run_history, with_current_run  # noqa: E402
from recon.store.load import RunInputs, WindowLoad, load_run_inputs  # noqa: E402
from recon.store.locks import hold_run_lock  # noqa: E402
from recon.store.persist import PersistedRun, RunWriter  # noqa: E402
from recon.system.memory import give_back_free_heap  # noqa: E402
from recon.system.paths import remove_leftovers  # noqa: E402

install_log_filters()

TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def peak_memory_mib() -> float:
    """This process's peak resident memory. VmHWM where there is /proc: ru_maxrss also
    counts what the parent held when it started this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(label: str, started: float, detail: str) -> None:
    """The step's log line; first, what the step freed goes back to the system."""
    give_back_free_heap()
    peak = peak_memory_mib()
    get_run_logger().info("%s: %s (%.2f s, peak memory %.0f MiB)", label, detail,
                          time.perf_counter() - started, peak)


@task(name="fetch", **TASK_OPTIONS)
def fetch_task(settings: Settings, day: dt.date) -> FetchedFile:
    started = time.perf_counter()
    fetched = fetch_settlement_file(settings, settings.merchant_id, day)
    _timed("fetch", started, f"{fetched.name}, {fetched.size:,} bytes, "
                             f"sha256 {fetched.sha256[:12]}")
    return fetched


@task(name="read", **TASK_OPTIONS)
def read_task(settings: Settings, fetched: FetchedFile, day: dt.date) -> SettlementFile:
    started = time.perf_counter()
    parsed = read_settlement_file(fetched.path, get_profile(settings.profile), day,
                                  name=fetched.name, limits=settings.read_limits)
    invalid = int((parsed.rows["invalid_reason"] != "").sum())
    _timed("read", started, f"{parsed.data_rows:,} data rows ({invalid:,} unreadable), "
                            f"{parsed.sheet_format}")
    return parsed


@task(name="load", **TASK_OPTIONS)
def load_task(engine: Engine, merchant_id: str, day: dt.date, covered: list[dt.date],
              parsed: SettlementFile, window: WindowLoad | None = None) -> RunInputs:
    started = time.perf_counter()
    inputs = load_run_inputs(engine, merchant_id, day, covered, parsed.rows, window)
    _timed("load", started, f"{len(inputs.payments):,} payments, {len(inputs.refunds):,} "
                            f"refunds, {len(inputs.ledger):,} ledger entries, "
                            f"{len(inputs.open_items):,} open items")
    return inputs


@task(name="match", **TASK_OPTIONS)
def match_task(parsed: SettlementFile, inputs: RunInputs, ctx: MatchContext,
               on_ledger: Callable[[Ledger], None] | None = None) -> ReconResult:
    started = time.perf_counter()
    result = match_settlement(parsed.rows, inputs.payments, inputs.refunds, inputs.ledger,
                              inputs.open_items, ctx, on_ledger)
    _timed("match", started, f"{result.exceptions:,} exceptions")
    return result


@task(name="read", **TASK_OPTIONS)
def read_parts_task(settings: Settings, engine: Engine, fetched: FetchedFile,
                    ctx: MatchContext, folder: Path) -> tuple[SpilledFile, Ties]:
    """The file's rows on disk in parts, by the payment groups the database gives."""
    started = time.perf_counter()
    spilled, ties = spill_in_parts(engine, fetched.path, get_profile(settings.profile), ctx,
                                   folder, settings.parts, name=fetched.name,
                                   limits=settings.read_limits)
    _timed("read", started, f"{spilled.data_rows:,} data rows in {spilled.parts} parts on "
                            f"disk (largest {max(spilled.part_rows):,}), "
                            f"{len(ties.groups):,} payments tied into groups, "
                            f"{spilled.sheet_format}")
    return spilled, ties


@task(name="load", **TASK_OPTIONS)
def load_parts_task(engine: Engine, ctx: MatchContext, spilled: SpilledFile, ties: Ties,
                    folder: Path) -> PartInputs:
    started = time.perf_counter()
    inputs = load_in_parts(engine, ctx, spilled, ties, folder)
    _timed("load", started, f"{sum(inputs.payments.counts):,} payments of the window on disk, "
                            f"{len(inputs.extra):,} outside it, {len(inputs.refunds):,} "
                            f"refunds, {len(inputs.ledger):,} ledger entries, "
                            f"{len(inputs.open_items):,} open items")
    return inputs


@task(name="match", **TASK_OPTIONS)
def match_parts_task(inputs: PartInputs, ctx: MatchContext,
                     on_ledger: Callable[[Ledger], None], folder: Path) -> ReconResult:
    started = time.perf_counter()
    result = match_in_parts_on_disk(inputs, ctx, on_ledger, folder)
    _timed("match", started, f"{result.exceptions:,} exceptions, in {inputs.spilled.parts} "
                             "parts (each part's ledger written as it was matched)")
    return result


@task(name="persist", **TASK_OPTIONS)
def persist_task(writer: RunWriter, result: ReconResult, run: RunRecord) -> PersistedRun:
    """The run's results written in its transaction; committed once the reports are
    staged (`_persist_and_report`)."""
    started = time.perf_counter()
    persisted = writer.write(result, run)
    entries = len(result.ledger) if writer.parted_entries is None else writer.parted_entries
    _timed("persist", started, persisted_detail(persisted, writer, entries))
    return persisted


def persisted_detail(persisted: PersistedRun, writer: RunWriter, entries: int) -> str:
    """The persist step's line: the run, whether it replaced an earlier one, and how the
    ledger of `entries` went in when it was written alongside the match."""
    detail = f"run {persisted.run_id}, attempt {persisted.attempt}"
    if persisted.rerun:
        detail += " (re-run: replaced the earlier results)"
    kept = ("" if writer.ledger_kept is None else
            f"; {writer.ledger_kept:,} of {entries:,} entries unchanged from the run before, "
            "kept")
    if writer.parted_entries is not None:
        detail += f"; the ledger's {entries:,} entries were written a part at a time{kept}"
    elif writer.ledger_seconds is not None:
        detail += (f"; the ledger was written alongside the match "
                   f"({writer.ledger_seconds:.2f} s{kept})")
    return detail


def _artifact_key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


@task(name="workbook", **TASK_OPTIONS)
def workbook_task(settings: Settings, result: ReconResult, summary: Summary,
                  history: Any, staging: Path) -> Path:
    """Build the workbook (and any overflow CSVs) in a staging folder; `publish_staged`
    moves them into place once the run is persisted, so a failed run never replaces a
    report."""
    started = time.perf_counter()
    stem = report_stem(result.merchant_id, result.settlement_date)
    workbook = write_exception_workbook(
        result, summary, staging / f"{stem}.xlsx", history,
        WorkbookOptions(open_item_alert_days=settings.open_item_alert_days))
    _timed("workbook", started, f"{summary.exceptions:,} exception rows")
    return workbook


@task(name="report", **TASK_OPTIONS)
def report_task(result: ReconResult, summary: Summary, staged: Path,
                folder: Path) -> dict[str, str]:
    """Move the staged reports into place (renames within one folder, checked before the
    commit) and note them as Prefect artifacts."""
    started = time.perf_counter()
    workbook = publish_staged(staged.parent, folder) / staged.name
    summary_path = folder / "summary.json"
    key = _artifact_key("recon", result.merchant_id, summary.settlement_date.isoformat())
    try:
        create_table_artifact(
            key=key, description=f"{result.merchant_id} {summary.settlement_date}",
            table=[{"category": name, "count": count,
                    "gross_amount": format_amount(summary.amounts[name])}
                   for name, count in summary.counts.items()])
        create_markdown_artifact(
            key=f"{key}-workbook",
            markdown=f"### {result.merchant_id} {summary.settlement_date}\n\n"
                     f"{summary.exceptions} exceptions; workbook `{workbook}`, "
                     f"summary `{summary_path}`")
    except Exception as exc:  # the artifacts are a view; the reports are in place already
        get_run_logger().warning("Prefect artifacts not created: %s", exc)
    _timed("report", started, f"{workbook}")
    return {"workbook": str(workbook), "summary": str(summary_path)}


def publish_staged(staging: Path, folder: Path) -> Path:
    """Move every file of `staging` into `folder` (replacing), then remove `staging`."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in sorted(staging.iterdir()):
        item.replace(folder / item.name)
    staging.rmdir()
    return folder


def check_publishable(folder: Path) -> None:
    """Before the commit: the report folder exists and takes files (the staged ones are
    renamed into it after the commit, which needs no space). OutputUnwritable if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputUnwritable(f"the report folder {folder} cannot be written "
                               f"({exc.strerror or exc}); nothing was saved") from exc


@task(name="notify", **TASK_OPTIONS)
def notify_task(settings: Settings, summary: Summary, workbook: str) -> str:
    started = time.perf_counter()
    if summary.exceptions == 0 and not settings.mail_all_clear:
        get_run_logger().info("all clear: no email (mail_all_clear is off)")
        return ""
    message = build_report_email(summary, Path(workbook), settings.mail_from, settings.mail_to,
                                 settings.mail_cc)
    stem = report_stem(summary.merchant_id, summary.settlement_date)
    delivery = deliver(message, settings, stem)
    _timed("notify", started, f"{message['Subject']} -> {delivery.detail}")
    return delivery.detail


@task(name="alert", **TASK_OPTIONS)
def alert_task(settings: Settings, merchant_id: str, day: dt.date, error: ReconError) -> str:
    """Tell the settlement team (`alert_to`) in words; the operator's log gets the command."""
    logger = get_run_logger()
    merchant = merchant_id or "(merchant unknown)"
    logger.error("to re-run once fixed: recon run --date %s%s", day,
                 f" --merchant {merchant_id}" if merchant_id else "")
    message = build_alert_email(merchant, day, error.reason_code, error.message,
                                settings.mail_from, settings.alert_recipients, settings.mail_cc)
    stem = f"alert_{merchant_id or 'unknown'}_{day:%Y%m%d}"
    try:
        delivery = deliver(message, settings, stem)
    except NotificationFailed as exc:
        logger.error("the alert could not be sent: %s", exc.message)
        return ""
    logger.warning("alert sent to %s: %s", ", ".join(settings.alert_recipients),
                   delivery.detail)
    return delivery.detail


#: Failures the settlement team is alerted about: the file is not there or not usable, or
#: the run failed on the way. An operator's mistake (CONFIG), a lock held by another run
#: and a mail that could not go are the operator's alone.
NOT_ALERTED = (ConfigError, RunLocked, NotificationFailed, NotWorkingDay)


def _calendar(settings: Settings) -> WorkingCalendar:
    return WorkingCalendar(settings.extra_holidays, settings.extra_working_days)


def fetch_and_read(settings: Settings, day: dt.date
                   ) -> tuple[Settings, FetchedFile, SettlementFile]:
    """The date's file, fetched and checked; the settings name the file's merchant."""
    settings, fetched = _fetched(settings, day)
    return settings, fetched, read_task(settings, fetched, day)


def _fetched(settings: Settings, day: dt.date) -> tuple[Settings, FetchedFile]:
    """The date's file, fetched; the settings name the file's merchant."""
    fetched = fetch_task(settings, day)
    return settings.replace(merchant_id=fetched.merchant_id), fetched


def settle(settings: Settings, fetched: FetchedFile, parsed: SettlementFile, day: dt.date,
           started_at: dt.datetime, engine: Engine | None = None,
           window: WindowLoad | None = None) -> dict[str, Any]:
    """Lock, load, match, persist, report and notify one read file, with one engine (made
    here unless given; `window` is the window's load started with it)."""
    ctx = _match_context(settings, day)
    if engine is not None:
        return _reconcile_parsed(settings, engine, fetched, parsed, ctx, started_at, window)
    engine = make_engine(settings.database_url)  # one pool for the whole run
    try:
        return _reconcile_parsed(settings, engine, fetched, parsed, ctx, started_at)
    finally:
        engine.dispose()


def _match_context(settings: Settings, day: dt.date) -> MatchContext:
    return MatchContext(merchant_id=settings.merchant_id, settlement_date=day,
                        calendar=_calendar(settings), fee_rules=settings.fee_rules,
                        refund_window_days=settings.refund_window_days)


def reconcile(settings: Settings, day: dt.date) -> dict[str, Any]:
    """The steps of one run, in order; raises ReconError when the run cannot finish.

    The window's payments and refunds, and the ledger entries of those payments, do not
    depend on the file: they load on a connection of their own while the file is read.
    With `settings.parts` the run holds one part of the file at a time
    (`_reconcile_in_parts`)."""
    started_at = dt.datetime.now(dt.UTC)
    settings, fetched = _fetched(settings, day)
    engine = make_engine(settings.database_url)  # one pool for the whole run
    if settings.parts:
        try:
            return _reconcile_in_parts(settings, engine, fetched,
                                       _match_context(settings, day), started_at)
        finally:
            engine.dispose()
    try:
        window = WindowLoad(engine, settings.merchant_id, day,
                            _match_context(settings, day).covered_dates)
        parsed = read_task(settings, fetched, day)
        return settle(settings, fetched, parsed, day, started_at, engine, window)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class FileFacts:
    """What a run reports of its file besides the match: its rows, layout, trailer."""

    data_rows: int
    sheet_format: str
    trailer: bool


def _reconcile_parsed(settings: Settings, engine: Engine, fetched: FetchedFile,
                      parsed: SettlementFile, ctx: MatchContext, started_at: dt.datetime,
                      window: WindowLoad | None = None) -> dict[str, Any]:
    merchant, day = ctx.merchant_id, ctx.settlement_date
    if window is not None:
        window.let_writers_in()
    with hold_run_lock(engine, merchant, day, settings.lock_wait_seconds,
                       settings.lock_stale_seconds):
        _remove_leftovers(settings, merchant, day)
        inputs = load_task(engine, merchant, day, list(ctx.covered_dates), parsed, window)

        def match(writer: RunWriter, record: RunRecord) -> ReconResult:
            # The database takes the ledger while the match goes on and the workbook is
            # built: the three overlap.
            return match_task(parsed, inputs, ctx, partial(writer.write_ledger, run=record))

        summary, paths = _persist_and_report(
            settings, engine, fetched, ctx, started_at,
            FileFacts(parsed.data_rows, parsed.sheet_format, parsed.trailer is not None), match)
    return _notified(settings, summary, paths, ctx)


def _reconcile_in_parts(settings: Settings, engine: Engine, fetched: FetchedFile,
                        ctx: MatchContext, started_at: dt.datetime) -> dict[str, Any]:
    """A run in `settings.parts` parts on disk (`recon.inparts.run`), under the date's lock from
    the read on: the payment groups the parts are cut by come from the database. The
    parts' folder is removed when the run ends, whatever the end."""
    merchant, day = ctx.merchant_id, ctx.settlement_date
    folder = in_parts_folder(settings.spill_dir, merchant, day, uuid.uuid4().hex[:8])
    try:
        with hold_run_lock(engine, merchant, day, settings.lock_wait_seconds,
                           settings.lock_stale_seconds):
            _remove_leftovers(settings, merchant, day, keep=folder)
            spilled, ties = read_parts_task(settings, engine, fetched, ctx, folder / "rows")
            inputs = load_parts_task(engine, ctx, spilled, ties, folder / "payments")

            def match(writer: RunWriter, record: RunRecord) -> ReconResult:
                return match_parts_task(inputs, ctx, partial(writer.write_ledger_part,
                                                             run=record), folder / "flagged")

            summary, paths = _persist_and_report(
                settings, engine, fetched, ctx, started_at,
                FileFacts(spilled.data_rows, spilled.sheet_format, spilled.trailer is not None),
                match)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _notified(settings, summary, paths, ctx)


def _remove_leftovers(settings: Settings, merchant: str, day: dt.date,
                      keep: Path | None = None) -> None:
    removed = remove_leftovers(settings.report_dir, settings.spill_dir, settings.archive_dir,
                               merchant, day, keep)
    if removed:
        get_run_logger().warning("removed %d leftover(s) of an earlier run of %s %s that did "
                                 "not finish", len(removed), merchant, day)


def _persist_and_report(settings: Settings, engine: Engine, fetched: FetchedFile,
                        ctx: MatchContext, started_at: dt.datetime, facts: FileFacts,
                        match: Callable[[RunWriter, RunRecord], ReconResult]
                        ) -> tuple[Summary, dict[str, str]]:
    """Under the run's lock: match (`match`, given the run's writer), write the results,
    stage the workbook and summary.json, then commit and move the reports into place; the
    summary and the reports' paths. Whatever fails before the commit leaves the database
    and the published reports as they were."""
    merchant, day = ctx.merchant_id, ctx.settlement_date
    # Read before the run's transaction begins: on SQLite it would hold them off.
    attempt = next_attempt(engine, merchant, day)
    earlier_runs = run_history(engine, merchant)
    record = RunRecord(merchant_id=merchant, settlement_date=day, started_at=started_at,
                       file_name=fetched.name, file_sha256=fetched.sha256,
                       file_rows=facts.data_rows, archive_path=str(fetched.path),
                       exceptions=0, summary={})
    writer = RunWriter(engine)
    folder = report_folder(settings.report_dir, merchant, day.isoformat())
    staging = folder.parent / f".{folder.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        result = match(writer, record)
        summary = build_summary(result, fetched.name, fetched.sha256, facts.sheet_format,
                                facts.trailer)
        record = dataclasses.replace(record, exceptions=result.exceptions,
                                     summary=summary.to_dict())
        preview = summary.with_run(RunFigures(attempt=attempt, rerun=attempt > 1,
                                              started_at=started_at))
        history = with_current_run(earlier_runs, day, result.exceptions, facts.data_rows)
        context = contextvars.copy_context()
        with ThreadPoolExecutor(1, thread_name_prefix="persist") as pool:
            persisting = pool.submit(context.run, persist_task, writer, result, record)
            try:
                staged = _staged(workbook_task, settings, result, preview, history, staging)
            finally:
                persisted = persisting.result()
        summary = summary.with_run(RunFigures(
            attempt=persisted.attempt, rerun=persisted.rerun, started_at=started_at,
            run_id=persisted.run_id, finished_at=persisted.finished_at),
            _case_figures(persisted, settings, day))
        _staged(write_summary, summary, staging / "summary.json")
        check_publishable(folder)
        writer.commit()
    except BaseException:
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    paths = report_task(result, summary, staged, folder)  # published under the lock
    return summary, paths


def _case_figures(persisted: PersistedRun, settings: Settings, day: dt.date
                  ) -> CaseFigures | None:
    """The cases as the run leaves them, aged as of its settlement date."""
    standing = persisted.cases
    if standing is None:
        return None
    return case_figures(standing.opened, standing.resolved_today, standing.unresolved, day,
                        _calendar(settings), settings.case_ack_sla_days)


def _staged(write: Callable[..., Path], *args: Any) -> Path:
    """`write(*args)` of a staged report; a full or read-only disk is OutputUnwritable."""
    try:
        return write(*args)
    except OSError as exc:
        where = exc.filename or args[-1]
        raise OutputUnwritable(f"{where} cannot be written ({exc.strerror or exc}); "
                               "nothing was saved") from exc


def _notified(settings: Settings, summary: Summary, paths: dict[str, str],
              ctx: MatchContext) -> dict[str, Any]:
    try:
        paths["email"] = notify_task(settings, summary, paths["workbook"])
    except NotificationFailed as exc:
        raise NotificationFailed(
            f"{exc.message}. The results are saved; re-send with: recon notify --date "
            f"{ctx.settlement_date} --merchant {ctx.merchant_id}") from exc
    return {"summary": summary, "paths": paths}


def resolve_secret_blocks(settings: Settings) -> Settings:
    """Fill secrets named in `secret_blocks` from Prefect Secret blocks (env wins)."""
    changes: dict[str, Any] = {}
    for key, block in settings.secret_blocks.items():
        if os.environ.get(f"RECON_{key.upper()}"):
            continue
        try:
            secret = cast(Secret, Secret.load(block))
            changes[key] = str(secret.get())
        except ValueError as exc:
            raise ConfigError(f"secret_blocks: Prefect Secret block {block!r} for {key} "
                              "cannot be loaded") from exc
    return settings.replace(**changes) if changes else settings


def settlement_day(settlement_date: str | None) -> dt.date:
    """The date asked for, else the run's scheduled date in WIB, else today in WIB."""
    if settlement_date:
        try:
            return dt.date.fromisoformat(str(settlement_date))
        except ValueError as exc:
            raise ConfigError(f"settlement_date {settlement_date!r} is not YYYY-MM-DD") from exc
    scheduled = prefect_runtime_flow_run.scheduled_start_time
    if scheduled is not None:
        return scheduled.astimezone(WIB).date()
    return today_wib()


def as_recon_error(exc: Exception) -> ReconError:
    """`exc` as the run's one-line error: an unexpected one is logged with its traceback
    for the operator and becomes ERROR."""
    if isinstance(exc, ReconError):
        return exc
    get_run_logger().exception("the run failed unexpectedly")
    return ReconError(f"the run failed unexpectedly ({type(exc).__name__}: {exc}); "
                      "the log has the details")


def _failed(exc: ReconError) -> State:
    """A failed state whose message is the one-line reason, logged without a traceback."""
    get_run_logger().error("%s", exc.one_line())
    return Failed(message=exc.one_line(), data=exc)


def _day_off(settings: Settings, day: dt.date) -> State | None:
    """A completed state saying why nothing is due on `day`, or None on a working day."""
    holiday = _calendar(settings).holiday_name(day)
    if holiday is None:
        return None
    get_run_logger().info("%s is not a working day (%s): no settlement file is due", day,
                          holiday)
    return Completed(message=f"NOT_WORKING_DAY: {day} ({holiday})",
                     data={"skipped": True, "reason": holiday})


def _run_name() -> str:
    parameters = prefect_runtime_flow_run.parameters
    return (f"{parameters.get('merchant_id') or 'merchant'}-"
            f"{parameters.get('settlement_date') or 'scheduled'}")


@flow(name="reconcile-settlement", persist_result=False, validate_parameters=False,
      flow_run_name=_run_name)
def reconcile_settlement(
    settlement_date: str | None = None,
    merchant_id: str | None = None,
    overrides: dict[str, Any] | None = None,
    config_file: str | None = None,
) -> State:
    """Reconcile one merchant's OVO settlement file for one settlement date.

    The state's message carries the outcome; a failed run's message is one line starting
    with its reason code (FILE_MISSING, FILE_REJECTED, RUN_LOCKED, ...).
    """
    logger = get_run_logger()
    try:
        base = resolve_secret_blocks(load_settings(config_file, overrides))
        settings = base.for_merchant(merchant_id, overrides)
        day = settlement_day(settlement_date)
    except ReconError as exc:
        return _failed(exc)
    skipped = _day_off(settings, day)
    if skipped is not None:
        return skipped
    try:
        outcome = reconcile(settings, day)
    except Exception as exc:
        error = as_recon_error(exc)
        if not isinstance(error, NOT_ALERTED):
            alert_task(settings, settings.merchant_id, day, error)
        return _failed(error)
    summary = outcome["summary"]
    logger.info("reconciled %s %s: %d exceptions, workbook %s", summary.merchant_id, day,
                summary.exceptions, outcome["paths"]["workbook"])
    return Completed(message="reconciled", data=outcome)


@flow(name="reconcile-merchants", persist_result=False, validate_parameters=False)
def reconcile_merchants(
    settlement_date: str | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> State:
    """Every configured merchant for one settlement date (default: the scheduled date in
    WIB), one child flow run each; one merchant's failure does not stop the others."""
    try:
        settings = load_settings(config_file, overrides)
        day = settlement_day(settlement_date)
    except ReconError as exc:
        return _failed(exc)
    skipped = _day_off(settings, day)
    if skipped is not None:
        return skipped
    merchants = settings.merchant_ids or ("",)
    failures = []
    for merchant in merchants:
        state = reconcile_settlement(settlement_date=day.isoformat(), merchant_id=merchant or None,
                                     overrides=overrides, config_file=config_file,
                                     return_state=True)
        if not state.is_completed():
            failures.append(f"{merchant or '(merchant from file)'}: {state.message}")
    if failures:
        return Failed(message=f"{len(failures)} of {len(merchants)} merchants failed: "
                              + "; ".join(failures))
    return Completed(message=f"{len(merchants)} merchant(s) reconciled for {day}")


def serve_daily(config_file: str | None, settings: Settings) -> None:
    """Serve `reconcile-merchants` on its cron schedule (Asia/Jakarta) until stopped."""
    reconcile_merchants.serve(
        name=settings.deployment_name,
        schedules=[Cron(settings.schedule_cron, timezone="Asia/Jakarta")],
        parameters={"config_file": config_file} if config_file else {},
        description="Reconcile every configured merchant's OVO settlement file of the "
                    "scheduled working day.",
        pause_on_shutdown=False,
    )


# ------------------------------------------------------------------ fan-out over a cluster


@dataclass(frozen=True)
class Prepared:
    """One date's file, fetched, read and checked: the independent part of a run."""

    day: dt.date
    started_at: dt.datetime
    settings: Settings | None = None
    fetched: FetchedFile | None = None
    parsed: SettlementFile | None = None
    skipped: str = ""
    error: ReconError | None = None  # why the file could not be had


@task(name="prepare", **TASK_OPTIONS)
def prepare_task(settings: Settings, day: dt.date) -> Prepared:
    """Fetch, read and validate one date's file (any worker; no database, no cross-date
    state). A missing or rejected file is an outcome, alerted here, not an exception."""
    started_at = dt.datetime.now(dt.UTC)
    holiday = _calendar(settings).holiday_name(day)
    if holiday is not None:
        return Prepared(day, started_at, skipped=f"NOT_WORKING_DAY: {day} ({holiday})")
    if settings.parts:
        return Prepared(day, started_at, error=ConfigError(
            "parts: a run in parts reads its file under the date's lock, in the process "
            "that settles it; it does not go with --dask-address/--dask-workers"))
    try:
        settings, fetched, parsed = fetch_and_read(settings, day)
    except Exception as exc:
        error = as_recon_error(exc)
        if not isinstance(error, NOT_ALERTED):
            alert_task(settings, settings.merchant_id, day, error)
        return Prepared(day, started_at, error=error)
    return Prepared(day, started_at, settings, fetched, parsed)


@task(name="settle-in-order", **TASK_OPTIONS)
def settle_in_order_task(prepared: list[Prepared]) -> list[dict[str, Any]]:
    """One merchant's dates, oldest first: match against the ledger, persist, report,
    notify. Only this step reads the state earlier dates left, so it runs in date order."""
    outcomes: list[dict[str, Any]] = []
    for item in sorted(prepared, key=lambda p: p.day):
        if item.skipped or item.error:
            outcomes.append({"day": item.day.isoformat(), "skipped": item.skipped,
                             "error": item.error})
            continue
        assert item.settings is not None and item.fetched is not None and item.parsed
        try:
            outcome = settle(item.settings, item.fetched, item.parsed, item.day,
                             item.started_at)
            outcomes.append({"day": item.day.isoformat(), "outcome": outcome})
        except ReconError as exc:
            get_run_logger().error("%s %s: %s", item.settings.merchant_id, item.day,
                                   exc.one_line())
            outcomes.append({"day": item.day.isoformat(), "error": exc})
    return outcomes


def dask_runner(address: str | None, workers: int | None) -> Any:
    """Prefect's DaskTaskRunner: an existing scheduler at `address`, else a local cluster
    of `workers` worker processes (default: one per core)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    kwargs: dict[str, Any] = {"processes": True, "threads_per_worker": 1}
    if workers:
        kwargs["n_workers"] = workers
    return DaskTaskRunner(cluster_kwargs=kwargs)


@flow(name="reconcile-fan-out", persist_result=False, validate_parameters=False)
def reconcile_fan_out(
    settlement_dates: list[str],
    merchant_ids: list[str | None],
    overrides: dict[str, Any] | None = None,
    config_file: str | None = None,
) -> list[dict[str, Any]]:
    """Many dates and merchants over the flow's task runner (a Dask cluster): every
    (merchant, date) file is fetched, read and checked in parallel; each merchant's dates
    are then settled in date order, merchants in parallel. One entry per (merchant, date):
    {"merchant", "day", and "outcome" or "error" or "skipped"}."""
    base = resolve_secret_blocks(load_settings(config_file, overrides))
    days = sorted(dt.date.fromisoformat(d) for d in settlement_dates)
    per_merchant = {}
    for merchant in merchant_ids:
        settings = base.for_merchant(merchant, overrides)
        futures = [prepare_task.submit(settings, day) for day in days]
        per_merchant[merchant or ""] = settle_in_order_task.submit(cast(list[Prepared], futures))
    results = []
    for merchant, future in per_merchant.items():
        for entry in future.result():
            results.append({"merchant": merchant, **entry})
    return results
