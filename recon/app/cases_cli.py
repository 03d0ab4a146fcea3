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
from pathlib import Path
from typing import Any

from recon.config import Settings, load_settings
from recon.core import cases
from recon.core import categories as cat
from recon.core.calendar import WorkingCalendar, today_wib
from recon.core.cases import ClaimLine
from recon.core.errors import ConfigError
from recon.core.money import format_amount, to_minor
from recon.report.cases_book import CaseLine, read_edits, write_cases_workbook
from recon.report.claims import build_claim_email
from recon.report.delivery import deliver
from recon.store.cases import (
    Action,
    CaseRow,
    act,
    apply_edits,
    case_history,
    list_cases,
    raise_cases,
)
from recon.store.engine import check_database, make_engine

#: The columns `recon cases list` shows, in order.
LIST_COLUMNS = ("case_id", "first_seen", "age", "sla_due", "overdue", "category", "kind",
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
    export = actions.add_parser(
        "export", help="write a merchant's open cases as a Cases workbook to edit and import")
    _common(export)
    export.add_argument("--merchant", required=True, help="MerchantID")
    export.add_argument("--out", default=".", help="folder for the workbook (default: here)")
    importing = actions.add_parser(
        "import", help="apply an edited Cases sheet (all rows or none)")
    _common(importing)
    importing.add_argument("file", help="the edited workbook (.xlsx)")
    importing.add_argument("--by", default=_login(), help="who acts (default: the login name)")
    importing.add_argument("--dry-run", action="store_true",
                           help="check and print what would be applied; apply nothing")
    claim = actions.add_parser(
        "raise", help="send OVO a claim for cases (the transaction issue settlement email)")
    _common(claim)
    claim.add_argument("case_ids", nargs="*", metavar="ID")
    claim.add_argument("--merchant", help="with no IDs: every case of this merchant a claim "
                                          "can be raised for")
    claim.add_argument("--category", help="with --merchant: only this category")
    claim.add_argument("--by", default=_login(), help="who acts (default: the login name)")
    claim.add_argument("--note", default="")
    claim.add_argument("--outbox", help="where emails are written as .eml")
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
    settings = load_settings(args.config, {"database_url": args.database,
                                           "outbox": getattr(args, "outbox", None)})
    check_database(settings.database_url)
    engine = make_engine(settings.database_url)
    calendar = WorkingCalendar(settings.extra_holidays, settings.extra_working_days)
    try:
        if args.case_command == "list":
            return _list(args, engine, settings, calendar)
        if args.case_command == "show":
            return _show(args.case_id, engine, settings, calendar)
        if args.case_command == "export":
            return _export(args, engine, settings, calendar)
        rules = cases.Rules(approval_threshold=to_minor(settings.approval_threshold),
                            ovo_claim_sla_days=settings.ovo_claim_sla_days, calendar=calendar)
        if args.case_command == "import":
            return _import(args, engine, rules)
        if args.case_command == "raise":
            return _raise(args, engine, settings, rules)
        done = act(engine, args.case_ids, Action(
            action=args.case_command, actor=args.by, source="command line",
            owner=args.owner, resolution=args.resolution, note=args.note), rules)
        for case_id, event in done:
            print(f"{case_id}: {event.from_state} -> {event.to_state} ({event.action} by "
                  f"{event.actor})")
        return 0
    finally:
        engine.dispose()


def _row(line: CaseLine) -> dict[str, Any]:
    """A case as `recon cases list` and `show` print it: the Cases sheet's row."""
    return {"case_id": line.case_id, "first_seen": line.first_seen.isoformat(),
            "age": line.age, "sla_due": line.sla_due.isoformat(),
            "overdue": "yes" if line.overdue else "", "category": line.category,
            "kind": line.kind, "case_key": line.key,
            "amount_at_risk": format_amount(line.amount_at_risk), "state": line.state,
            "owner": line.owner, "resolution": line.resolution, "version": line.version}


def _list(args: argparse.Namespace, engine: Any, settings: Settings,
          calendar: WorkingCalendar) -> int:
    if args.older_than is not None and args.older_than < 0:
        raise ConfigError("--older-than must not be negative")
    states = args.state or ([] if args.all else list(cases.UNRESOLVED))
    today = today_wib()
    rows = [_row(line) for line in case_lines(list_cases(
        engine, args.merchant, states, args.category, args.owner), settings, calendar, today)]
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
    for key, value in _row(case_lines([row], settings, calendar, today_wib())[0]).items():
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


def case_lines(rows: Sequence[CaseRow], settings: Settings, calendar: WorkingCalendar,
               today: dt.date) -> list[CaseLine]:
    """The Cases sheet's rows of `rows`."""
    lines = []
    for row in rows:
        age = cases.age_of(row.state, row.first_seen, today, calendar,
                           settings.case_ack_sla_days)
        due = (row.state.claim_due if row.state.state == cases.RAISED_WITH_OVO
               and row.state.claim_due else age.ack_due)
        lines.append(CaseLine(
            case_id=row.case_id, first_seen=row.first_seen, age=age.working_days,
            sla_due=due, overdue=age.overdue, category=row.category, kind=row.kind,
            key=row.case_key, amount_at_risk=row.amount_at_risk, delta=row.delta,
            state=row.state.state, owner=row.state.owner, resolution=row.state.resolution,
            note=row.state.note, version=row.state.version))
    return lines


def _export(args: argparse.Namespace, engine: Any, settings: Settings,
            calendar: WorkingCalendar) -> int:
    settings.check_merchant_id(args.merchant)
    today = today_wib()
    rows = list_cases(engine, args.merchant, cases.UNRESOLVED)
    name = f"cases_{args.merchant}_{today:%Y%m%d}.xlsx"
    path = write_cases_workbook(case_lines(rows, settings, calendar, today), Path(args.out),
                                name)
    print(f"{len(rows)} open case(s) of {args.merchant}: {path}")
    return 0


def _import(args: argparse.Namespace, engine: Any, rules: cases.Rules) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    done = apply_edits(engine, read_edits(path), args.by, rules, dry_run=args.dry_run)
    for case_id, event in done:
        print(f"{case_id}: {event.from_state} -> {event.to_state} ({event.action} by "
              f"{event.actor})")
    verb = "would apply" if args.dry_run else "applied"
    print(f"{path}: {verb} {len(done)} change(s)")
    return 0


def _raise(args: argparse.Namespace, engine: Any, settings: Settings, rules: cases.Rules) -> int:
    if not settings.ovo_claims_to:
        raise ConfigError("ovo_claims_to is not set: give the address of OVO's settlement team "
                          "from the merchant's agreement (configuration or RECON_OVO_CLAIMS_TO)")
    ids = list(args.case_ids)
    if not ids:
        if not args.merchant:
            raise ConfigError("name the cases to raise (IDs), or --merchant for all of them")
        ids = [row.case_id for row in list_cases(
            engine, args.merchant, cases.TRANSITIONS[cases.RAISE][0], args.category)]
        if not ids:
            print(f"no case of {args.merchant} to raise")
            return 0
    merchant = ids[0].rsplit("-", 1)[0]

    def send(lines: list[ClaimLine], due: dt.date) -> str:
        message = build_claim_email(merchant, lines, due, settings.mail_from,
                                    settings.ovo_claims_to, settings.mail_to)
        delivery = deliver(message, settings, f"claim_{merchant}")
        return f"{message['Subject']}: sent via {delivery.channel} ({delivery.detail})"

    done, said = raise_cases(engine, ids, args.by, rules, send, note=args.note)
    print(said)
    for case_id, event in done:
        print(f"{case_id}: {event.from_state} -> {event.to_state}, answer due {event.due_date}")
    return 0
