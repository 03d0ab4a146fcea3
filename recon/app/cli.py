"""The `recon` command line (SPEC section 7). Errors print one line on stderr."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from recon.app.cases_cli import add_parser as add_cases_parser
from recon.app.cases_cli import run as run_cases
from recon.app.runner import DateRun, print_summary_table, run_fan_out, run_many
from recon.config import Settings, load_settings
from recon.core.calendar import WorkingCalendar, today_wib
from recon.core.errors import (
    ConfigError,
    NotWorkingDay,
    ReconError,
)
from recon.system.memory import limit_malloc_arenas


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: $RECON_CONFIG)")
    parser.add_argument("--database", help="SQLAlchemy database URL")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--merchant", help="MerchantID (default: every configured merchant, "
                                           "else the one in the file name)")
    parser.add_argument("--source", help="folder or sftp://user@host:port/dir of the files")
    parser.add_argument("--report-dir", help="where reports are written")
    parser.add_argument("--outbox", help="where emails are written as .eml")
    parser.add_argument("--parts", type=int, metavar="N",
                        help="run each date in N parts on disk, one in memory at a time, "
                             "for a file larger than memory (default 0: the whole file "
                             "in memory)")
    parser.add_argument("--dask-address", metavar="tcp://HOST:8786",
                        help="spread the work over this Dask scheduler's workers")
    parser.add_argument("--dask-workers", type=int, metavar="N",
                        help="spread the work over a local Dask cluster of N worker processes")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description=(
        "Reconcile OVO D+1 settlement files against the merchant's payments and refunds."))
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init-db", help="create the reference and pipeline tables")
    _add_common(init)

    run = commands.add_parser("run", help="reconcile one settlement date")
    _add_common(run)
    run.add_argument("--date", help="settlement date YYYY-MM-DD (default: today in WIB)")
    _add_run_options(run)

    backfill = commands.add_parser("backfill", help="reconcile every working day of a range")
    _add_common(backfill)
    backfill.add_argument("--from", required=True, help="first date YYYY-MM-DD")
    backfill.add_argument("--to", required=True, help="last date YYYY-MM-DD")
    _add_run_options(backfill)

    serve = commands.add_parser("serve", help="serve the daily schedule (Prefect deployment)")
    _add_common(serve)
    serve.add_argument("--cron", help="cron in Asia/Jakarta (default: 0 9 * * 1-5)")
    serve.add_argument("--name", help="deployment name (default: daily)")

    notify = commands.add_parser(
        "notify", help="send a reconciled date's email again, without reconciling again")
    notify.add_argument("--config", help="TOML configuration file (default: $RECON_CONFIG)")
    notify.add_argument("--date", required=True, help="settlement date YYYY-MM-DD")
    notify.add_argument("--merchant", help="MerchantID (default: the one report of that date)")
    notify.add_argument("--report-dir", help="where reports were written")
    notify.add_argument("--outbox", help="where emails are written as .eml")

    unlock = commands.add_parser(
        "unlock", help="release a date's lock left by a run that is gone (after checking that "
                       "no live run holds it)")
    _add_common(unlock)
    unlock.add_argument("--date", required=True, help="settlement date YYYY-MM-DD")
    unlock.add_argument("--merchant", required=True, help="MerchantID")

    add_cases_parser(commands)

    demo = commands.add_parser("demo", help="the embedded default end to end on generated data")
    demo.add_argument("--dir", default="var/demo", help="demo folder, recreated (var/demo)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "database_url": getattr(args, "database", None),
        "merchant_id": getattr(args, "merchant", None),
        "source": getattr(args, "source", None),
        "report_dir": getattr(args, "report_dir", None),
        "outbox": getattr(args, "outbox", None),
    }
    return load_settings(args.config, overrides)


def _parse_date(text: str | None) -> dt.date:
    if not text:
        return today_wib()
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--date {text!r} is not a date (YYYY-MM-DD)") from exc


def _override_map(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line options that become flow parameters; no secrets (those go through
    _secrets_in_environment)."""
    return {key: str(value) for key, value in {
        "source": args.source, "report_dir": args.report_dir,
        "outbox": args.outbox, "parts": args.parts}.items() if value is not None}


def _runs(args: argparse.Namespace, merchants: Sequence[str | None],
          days: Sequence[dt.date]) -> list[DateRun]:
    if args.dask_address or args.dask_workers:
        return run_fan_out(_override_map(args), args.config, merchants, days,
                           args.dask_address, args.dask_workers)
    return run_many(_override_map(args), args.config, merchants, days)


def _report(runs: Sequence[DateRun]) -> int:
    """Print each run's table, one stderr line per failure; the first failure's exit code."""
    for run in runs:
        if run.outcome is not None:
            print_summary_table(run.outcome["summary"], run.outcome["paths"])
    if len(runs) > 1:
        print("\nRuns:")
        for run in runs:
            status = ("reconciled" if run.outcome is not None else run.skipped
                      or (run.error.one_line() if run.error else ""))
            print(f"  {run.day}  {run.merchant_id or '-':<12} {status}")
    failed = [run for run in runs if run.error is not None]
    for run in failed:
        who = f"{run.merchant_id} {run.day}: " if len(runs) > 1 else ""
        assert run.error is not None
        print(f"recon: {who}{run.error.one_line()}", file=sys.stderr)
    return failed[0].error.exit_code if failed and failed[0].error else 0


def _cmd_init_db(args: argparse.Namespace) -> int:
    from recon.store.engine import init_db, make_engine, safe_url

    settings = _settings(args)
    created = init_db(make_engine(settings.database_url))
    print(f"{safe_url(settings.database_url)}: "
          + (f"created {', '.join(created)}" if created else "all tables already exist"))
    return 0


@contextlib.contextmanager
def _secrets_in_environment(args: argparse.Namespace) -> Iterator[None]:
    """Options that may hold a password reach the flow through this process's environment
    (restored afterwards), never as flow parameters, which the Prefect API stores."""
    exported = {"RECON_DATABASE_URL": getattr(args, "database", None)}
    saved = {key: os.environ.get(key) for key in exported}
    try:
        for key, value in exported.items():
            if value:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _merchants(args: argparse.Namespace, settings: Settings) -> list[str | None]:
    if args.merchant:
        return [args.merchant]
    return list(settings.merchant_ids) or [None]


def _preflight(args: argparse.Namespace, settings: Settings, merchants: Sequence[str | None],
               days: Sequence[dt.date]) -> None:
    """What an operator may have got wrong, found before Prefect starts and before any
    alert can go out: the merchants, their source folders, the database and its tables.
    A run that will wait for today's file says so first, with its deadline."""
    from recon.sources.fetch import announce_wait, check_source, source_names_merchant
    from recon.store.engine import check_database

    per_merchant = [settings.for_merchant(merchant) for merchant in merchants]
    for each in per_merchant:
        check_source(each)
    configured = {str(entry["merchant_id"]) for entry in settings.merchants}
    named = [m for m in merchants if m and m not in configured]
    for merchant in check_database(settings.database_url, named):
        if not source_names_merchant(settings.for_merchant(merchant), merchant):
            raise ConfigError(f"unknown merchant {merchant}: not configured, no payment or run "
                              f"of it in the database, and no file at {settings.source} "
                              "names it")
    for each in per_merchant:
        for day in days:
            line = announce_wait(each, day)
            if line:
                print(f"recon: {line}", flush=True)


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    day = _parse_date(args.date)
    calendar = WorkingCalendar(settings.extra_holidays, settings.extra_working_days)
    holiday = calendar.holiday_name(day)
    if holiday:
        raise NotWorkingDay(f"{day} ({day:%A}) is not a working day ({holiday}): "
                            "no settlement file is due")
    merchants = _merchants(args, settings)
    with _secrets_in_environment(args):
        _preflight(args, _settings(args), merchants, [day])
        with prefect_environment():
            runs = _runs(args, merchants, [day])
    return _report(runs)


def _cmd_backfill(args: argparse.Namespace) -> int:
    settings = _settings(args)
    first, last = _parse_date(getattr(args, "from")), _parse_date(args.to)
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    calendar = WorkingCalendar(settings.extra_holidays, settings.extra_working_days)
    days = calendar.working_days(first, last)
    if not days:
        raise NotWorkingDay(f"no working day from {first} to {last}")
    merchants = _merchants(args, settings)
    with _secrets_in_environment(args):
        _preflight(args, _settings(args), merchants, days)
        print(f"backfill: {len(days)} working days from {days[0]} to {days[-1]}")
        with prefect_environment():
            runs = _runs(args, merchants, days)
    return _report(runs)


def _cmd_serve(args: argparse.Namespace) -> int:
    from pipelines.flows import serve_daily

    overrides = {"schedule_cron": args.cron, "deployment_name": args.name}
    settings = load_settings(args.config, overrides)
    config = str(Path(args.config).resolve()) if args.config else None
    print(f"serving reconcile-merchants/{settings.deployment_name}: cron "
          f"'{settings.schedule_cron}' Asia/Jakarta, merchants "
          f"{', '.join(settings.merchant_ids) or '(from the file names)'}; Ctrl-C to stop")
    with _secrets_in_environment(args), prefect_environment():
        serve_daily(config, settings)
    # The schedule's runner returns only once stopped: by Ctrl-C through this command's
    # handler, by SIGTERM through its own graceful shutdown (its handler replaces ours).
    if not _stopped_by:
        _stopped_by.append(signal.SIGTERM)
    raise KeyboardInterrupt(_SIGNAL_NAMES[_stopped_by[0]])


def _cmd_notify(args: argparse.Namespace) -> int:
    from recon.report.delivery import deliver
    from recon.report.mail import build_report_email
    from recon.report.summary import find_report, report_stem

    settings = _settings(args)
    day = _parse_date(args.date)
    summary, workbook = find_report(settings.report_dir, args.merchant or settings.merchant_id,
                                    day)
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to,
                                 settings.mail_cc)
    delivery = deliver(message, settings, report_stem(summary.merchant_id, day))
    print(f"{message['Subject']}: sent via {delivery.channel} ({delivery.detail})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from recon.app.demo import run_demo

    with prefect_environment():
        return run_demo(args.dir)


def _cmd_unlock(args: argparse.Namespace) -> int:
    from recon.store.engine import check_database, make_engine
    from recon.store.locks import release_lock

    settings = _settings(args)
    day = _parse_date(args.date)
    check_database(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        print(release_lock(engine, settings.merchant_id, day, settings.lock_stale_seconds))
    finally:
        engine.dispose()
    return 0


#: Seconds a temporary Prefect server may take to start. Its first start on a machine
#: creates its database, which can take longer than Prefect's own limit on a slow day
#: (figures: `bench/ROUNDS.md`, the constants).
EPHEMERAL_STARTUP_SECONDS = 120


@contextlib.contextmanager
def prefect_defaults() -> Iterator[None]:
    """Prefect settings the commands need unless the environment or profile sets them."""
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    with temporary_settings(set_defaults={
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_SECONDS}):
        yield


@contextlib.contextmanager
def prefect_environment() -> Iterator[None]:
    """Prefect for a command that runs flows: the configured API server, else a temporary
    one of the command's own (`pipelines.server`) that never outlives it."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    from pipelines.server import temporary_server

    with prefect_defaults():
        try:
            with temporary_server(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()):
                yield
        except RuntimeError as exc:
            if "temporary Prefect server" not in str(exc):
                raise
            raise ReconError(str(exc)) from exc


#: After SIGINT or SIGTERM a command unwinds (the flow run marked, the transaction rolled
#: back, the temporary server stopped); if that has not ended it by then, it exits anyway.
STOP_SECONDS = 8.0
_SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
_stopped_by: list[int] = []


def _stop(signum: int, _frame: object) -> None:
    """The first SIGINT/SIGTERM unwinds the command as Ctrl-C does; a second one, or
    STOP_SECONDS without an end, exits at once. The temporary server goes with the
    process (its death signal)."""
    if _stopped_by:
        _exit_now(signum, "stopped again")
    _stopped_by.append(signum)
    timer = threading.Timer(STOP_SECONDS, _exit_now, (signum, "did not unwind in time"))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt(_SIGNAL_NAMES.get(signum, str(signum)))


def _exit_now(signum: int, why: str) -> None:
    print(f"recon: INTERRUPTED: stopped by {_SIGNAL_NAMES.get(signum, signum)} ({why}); "
          "nothing of an unfinished run was saved", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _install_signal_handlers() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in _SIGNAL_NAMES:
            signal.signal(signum, _stop)


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()
    args = _parser().parse_args(argv)
    handlers = {"init-db": _cmd_init_db, "run": _cmd_run, "backfill": _cmd_backfill,
                "serve": _cmd_serve, "notify": _cmd_notify, "demo": _cmd_demo,
                "unlock": _cmd_unlock, "cases": run_cases}
    try:
        return handlers[args.command](args)
    except ReconError as exc:
        print(f"recon: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a defect, not an input: the trace to the log, one line here
        logging.getLogger("recon.noise").exception("%s failed unexpectedly", args.command)
        print(f"recon: ERROR: {args.command} failed unexpectedly ({type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:300]}); the log has the details", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        signum = _stopped_by[0] if _stopped_by else signal.SIGINT
        print(f"recon: INTERRUPTED: stopped by {_SIGNAL_NAMES.get(signum, signum)}; nothing "
              "of an unfinished run was saved", file=sys.stderr)
        return 128 + signum


def _library_noise_to_the_log() -> None:
    """Standard error is for the one line that says why a command failed. What libraries
    print there on their own (Python warnings; 'Exception ignored' traces of objects, such
    as an event loop half made as Prefect's runner stops) goes to the log on standard
    output instead."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    noise = logging.getLogger("recon.noise")
    noise.addHandler(handler)
    noise.propagate = False
    warnings = logging.getLogger("py.warnings")
    warnings.addHandler(handler)
    warnings.propagate = False
    logging.captureWarnings(True)

    def unraisable(hook: Any) -> None:
        noise.warning("ignored %s: %s (in %r)", type(hook.exc_value).__name__,
                      hook.exc_value, hook.object)

    sys.unraisablehook = unraisable


def command() -> None:
    """The `recon` command: `main`, then an exit without the interpreter's last garbage
    collections over every object Prefect, pandas and Arrow made at import (0.7-1.1 s
    after a 1M run here; the command's files, connections and logs are closed by then).
    Frozen objects are left out of collections (`gc.freeze`); their memory goes with the
    process."""
    _install_signal_handlers()
    _library_noise_to_the_log()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    command()
