"""The `recon` command line (SPEC section 7). Errors print one line on stderr."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any, cast

from recon import categories as cat
from recon.calendar import WorkingCalendar, today_wib
from recon.config import Settings, load_settings
from recon.errors import (
    ConfigError,
    FileMissing,
    FileRejected,
    NotificationFailed,
    NotWorkingDay,
    ReconError,
    RunLocked,
    SourceUnavailable,
    StoreError,
)

EXIT_BY_CODE = {cls.reason_code: cls.exit_code for cls in (
    ConfigError, NotWorkingDay, FileMissing, FileRejected, RunLocked, NotificationFailed,
    StoreError, SourceUnavailable)}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: $RECON_CONFIG)")
    parser.add_argument("--database", help="SQLAlchemy database URL")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description=(
        "Reconcile OVO D+1 settlement files against the merchant's payments and refunds."))
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init-db", help="create the reference and pipeline tables")
    _add_common(init)

    run = commands.add_parser("run", help="reconcile one settlement date")
    _add_common(run)
    run.add_argument("--date", help="settlement date YYYY-MM-DD (default: today in WIB)")
    run.add_argument("--merchant", help="MerchantID (default: configuration, else the file's)")
    run.add_argument("--source", help="folder holding the settlement files")
    run.add_argument("--report-dir", help="where reports are written")
    run.add_argument("--outbox", help="where emails are written as .eml")

    notify = commands.add_parser(
        "notify", help="send a reconciled date's email again, without reconciling again")
    notify.add_argument("--config", help="TOML configuration file (default: $RECON_CONFIG)")
    notify.add_argument("--date", required=True, help="settlement date YYYY-MM-DD")
    notify.add_argument("--merchant", help="MerchantID (default: the one report of that date)")
    notify.add_argument("--report-dir", help="where reports were written")
    notify.add_argument("--outbox", help="where emails are written as .eml")

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
    return {key: str(value) for key, value in {
        "database_url": args.database, "source": args.source,
        "report_dir": args.report_dir, "outbox": args.outbox}.items() if value is not None}


def print_summary_table(summary: dict[str, Any], paths: dict[str, str]) -> None:
    print()
    print(f"Merchant {summary['merchant_id']}  settlement date {summary['settlement_date']}  "
          f"covers {', '.join(summary['covered_transaction_dates'])}")
    print(f"File {summary['file']['name']}: {summary['file']['rows']:,} rows")
    width = max(len(name) for name in cat.ALL_CATEGORIES)
    print(f"  {'category':<{width}}  {'count':>9}  {'GrossAmount':>18}")
    for name in cat.ALL_CATEGORIES:
        print(f"  {name:<{width}}  {summary['counts'][name]:>9,}  "
              f"{summary['amounts'][name]:>18}")
    print(f"Open items from earlier dates: {summary['open_items']} "
          f"(closed by this file: {summary['closed_items']})")
    for label in ("workbook", "summary", "email"):
        if label in paths:
            print(f"  {label:<8} {paths[label]}")


def run_dates(settings_overrides: dict[str, Any], config_file: str | None,
              merchant_id: str | None, days: Sequence[dt.date]) -> list[dict[str, Any]]:
    """Run the flow for each date in this process; raises ReconError on the first failure."""
    from pipelines.flows import reconcile_settlement

    outcomes = []
    for day in days:
        state = reconcile_settlement(settlement_date=day.isoformat(), merchant_id=merchant_id,
                                     overrides=settings_overrides, config_file=config_file,
                                     return_state=True)
        if not state.is_completed():
            message = " ".join(str(state.message or "run failed").split())
            code = message.split(":", 1)[0]
            error = ReconError(message.split(": ", 1)[1] if ": " in message else message)
            error.reason_code = code if code in EXIT_BY_CODE else "ERROR"
            error.exit_code = EXIT_BY_CODE.get(code, 1)
            raise error
        outcomes.append(cast(dict[str, Any], state.result()))
    return outcomes


def _cmd_init_db(args: argparse.Namespace) -> int:
    from recon.store import init_db, make_engine, safe_url

    settings = _settings(args)
    created = init_db(make_engine(settings.database_url))
    print(f"{safe_url(settings.database_url)}: "
          + (f"created {', '.join(created)}" if created else "all tables already exist"))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    day = _parse_date(args.date)
    calendar = WorkingCalendar(settings.extra_holidays, settings.extra_working_days)
    holiday = calendar.holiday_name(day)
    if holiday:
        raise NotWorkingDay(f"{day} ({day:%A}) is not a working day ({holiday}): "
                            "no settlement file is due")
    outcome = run_dates(_override_map(args), args.config, args.merchant, [day])[0]
    print_summary_table(outcome["summary"], outcome["paths"])
    return 0


def _cmd_notify(args: argparse.Namespace) -> int:
    from recon.delivery import deliver
    from recon.mail import build_report_email
    from recon.summary import find_report

    settings = _settings(args)
    day = _parse_date(args.date)
    summary, workbook = find_report(settings.report_dir, args.merchant or settings.merchant_id,
                                    day)
    message = build_report_email(summary, workbook, settings.mail_from, settings.mail_to,
                                 settings.mail_cc)
    stem = f"recon_{summary['merchant_id']}_{day:%Y%m%d}"
    delivery = deliver(message, settings, stem)
    print(f"{message['Subject']}: sent via {delivery.channel} ({delivery.detail})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from recon.demo import run_demo

    return run_demo(args.dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"init-db": _cmd_init_db, "run": _cmd_run, "notify": _cmd_notify,
                "demo": _cmd_demo}
    try:
        return handlers[args.command](args)
    except ReconError as exc:
        print(f"recon: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
