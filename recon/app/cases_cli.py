"""`recon cases`: list, show and act on exception cases. No Prefect: each call is one
database read or one transaction."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import getpass
import json
import sys
from collections.abc import Sequence
from typing import Any

from recon.config import Settings, load_settings
from recon.core import cases
from recon.core import categories as cat
from recon.core.calendar import WorkingCalendar, today_wib
from recon.core.errors import ConfigError
from recon.core.money import format_amount, to_minor
from recon.store.cases import Action, CaseRow, act, case_history, list_cases
from recon.store.engine import check_database, make_engine

#: The columns `recon cases list` shows, in order.
LIST_COLUMNS = ("case_id", "first_seen", "age", "ack_due", "overdue", "category", "kind",
                "case_key", "amount_at_risk", "state", "owner", "resolution", "version")


def add_parser(commands: Any) -> None:
    """`recon cases <action>` on the command line's subcommands."""
    parser = commands.add_parser("cases", help="list, show and act on exception cases")
    actions = parser.add_subparsers(dest="case_command", required=True)
    listing = actions.add_parser("list", help="cases, oldest first")
    _common(listing)
    listing.add_argument("--merchant", help="MerchantID")
    listing.add_argument("--state", action="append", choices=cases.STATES,
                         help="only cases in this state (repeatable; default: unresolved)")
    listing.add_argument("--all", action="store_true", help="resolved cases too")
    listing.add_argument("--category", choices=[c for c in cat.ALL_CATEGORIES
                                                if c != cat.MATCHED])
    listing.add_argument("--owner")
    listing.add_argument("--overdue", action="store_true", help="only overdue cases")
    listing.add_argument("--older-than", type=int, metavar="N",
                         help="only cases older than N working days")
    listing.add_argument("--format", choices=("table", "csv", "json"), default="table")
    show = actions.add_parser("show", help="a case with its history and occurrences")
    _common(show)
    show.add_argument("case_id")
    for action, text in ((cases.ACK, "acknowledge (the owner: --owner, else who acts)"),
                         (cases.ASSIGN, "give to an owner (--owner)"),
                         (cases.NOTE, "add a note (--note)"),
                         (cases.RESOLVE, "resolve with a code (--resolution)"),
                         (cases.REOPEN, "reopen a resolved case"),
                         (cases.APPROVE, "approve a resolution someone else asked for")):
        acting = actions.add_parser(action, help=text)
        _common(acting)
        acting.add_argument("case_ids", nargs="+", metavar="ID")
        acting.add_argument("--by", default=_login(), help="who acts (default: the login name)")
        acting.add_argument("--owner", default="")
        acting.add_argument("--resolution", default="", choices=("", *cases.RESOLUTIONS))
        acting.add_argument("--note", default="")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (default: $RECON_CONFIG)")
    parser.add_argument("--database", help="SQLAlchemy URL")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, {"database_url": args.database})
    check_database(settings.database_url)
    engine = make_engine(settings.database_url)
    calendar = WorkingCalendar(settings.extra_holidays, settings.extra_working_days)
    try:
        if args.case_command == "list":
            return _list(args, engine, settings, calendar)
        if args.case_command == "show":
            return _show(args.case_id, engine, settings, calendar)
        rules = cases.Rules(approval_threshold=to_minor(settings.approval_threshold),
                            ovo_claim_sla_days=settings.ovo_claim_sla_days, calendar=calendar)
        done = act(engine, args.case_ids, Action(
            action=args.case_command, actor=args.by, source="command line",
            owner=args.owner, resolution=args.resolution, note=args.note), rules)
        for case_id, event in done:
            print(f"{case_id}: {event.from_state} -> {event.to_state} ({event.action} by "
                  f"{event.actor})")
        return 0
    finally:
        engine.dispose()


def _row(row: CaseRow, settings: Settings, calendar: WorkingCalendar,
         today: dt.date) -> dict[str, Any]:
    age = cases.age_of(row.state, row.first_seen, today, calendar, settings.case_ack_sla_days)
    return {"case_id": row.case_id, "first_seen": row.first_seen.isoformat(),
            "age": age.working_days, "ack_due": age.ack_due.isoformat(),
            "overdue": "yes" if age.overdue else "", "category": row.category,
            "kind": row.kind, "case_key": row.case_key,
            "amount_at_risk": format_amount(row.amount_at_risk), "state": row.state.state,
            "owner": row.state.owner, "resolution": row.state.resolution,
            "version": row.state.version}


def _list(args: argparse.Namespace, engine: Any, settings: Settings,
          calendar: WorkingCalendar) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise ConfigError("--older-than must not be negative")
    states = args.state or ([] if args.all else list(cases.UNRESOLVED))
    today = today_wib()
    rows = [_row(row, settings, calendar, today) for row in list_cases(
        engine, args.merchant, states, args.category, args.owner)]
    rows = [r for r in rows if (not args.overdue or r["overdue"])
            and (args.older_than is None or r["age"] > args.older_than)]
    _print(rows, args.format)
    return 0


def _print(rows: Sequence[dict[str, Any]], form: str) -> None:
    if form == "json":
        print(json.dumps(list(rows), indent=2, ensure_ascii=False))
        return
    if form == "csv":
        writer = csv.DictWriter(sys.stdout, LIST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in LIST_COLUMNS}
    print("  ".join(c.ljust(widths[c]) for c in LIST_COLUMNS))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in LIST_COLUMNS))
    print(f"{len(rows)} case(s)")


def _show(case_id: str, engine: Any, settings: Settings, calendar: WorkingCalendar) -> int:
    row, events, seen = case_history(engine, case_id)
    for key, value in _row(row, settings, calendar, today_wib()).items():
        print(f"{key:<15} {value}")
    if row.state.note:
        print(f"{'note':<15} {row.state.note}")
    if row.state.claim_due:
        print(f"{'claim due':<15} {row.state.claim_due}")
    print("\nHistory:")
    for e in events:
        extra = ", ".join(f"{k} {v}" for k, v in (("owner", e.owner), ("resolution",
                          e.resolution), ("note", e.note), ("due", e.due_date)) if v)
        print(f"  {e.at:%Y-%m-%d %H:%M} UTC  {e.actor:<12} {e.action:<10} "
              f"{e.from_state or '-'} -> {e.to_state}  [{e.source}]"
              + (f"  {extra}" if extra else ""))
    print("\nSeen:")
    for s in seen:
        line = f"line {s['line_no']}" if s["line_no"] else "records"
        print(f"  {s['settlement_date']}  {line:<10} IDR {s['amount_at_risk']}  {s['reason']}")
    return 0
