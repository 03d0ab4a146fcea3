"""Exception cases in the database: what a run's exceptions do to them (in the run's own
transaction), and what people do to them (each action one transaction).

A case is keyed by merchant, category, kind and business key: a payment's
MerchantInvoice, a refund's key (RefundInvoice, else OVOReferenceNo), a record's own key
for MISSING_IN_SETTLEMENT, and the settlement date and line for a row that has none (an
INVALID_ROW). Its state in `recon_cases` is always the fold of its events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from recon.core import cases
from recon.core import categories as cat
from recon.core.calendar import WIB
from recon.core.cases import CaseRefused, CaseState, ClaimLine, Event
from recon.core.found import refund_keys
from recon.core.money import minor_text, to_minor
from recon.core.result import ReconResult
from recon.store.engine import WRITE_BATCH_ROWS, bulk_insert, database_error
from recon.store.tables import (
    ovo_payments,
    ovo_refunds,
    recon_case_events,
    recon_case_numbers,
    recon_case_occurrences,
    recon_cases,
    recon_exceptions,
)

KEY = ["category", "kind", "case_key"]
#: The keys a run's exceptions and closures name, staged for one join with the cases.
STAGED_KEYS = Table(
    "recon_case_keys_staged", MetaData(),
    Column("category", String(32), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("case_key", String(160), nullable=False),
    Column("seen", Integer, nullable=False),  # 1: an exception of this run; 0: a closure
    Column("amount_at_risk", Numeric(18, 2)),  # of the run's row of the key
    Column("delta", Numeric(18, 2)),
    # The cases' updates probe it once per case: without a key SQLite scans it each time.
    # A key in the CREATE TABLE itself: a separate CREATE INDEX commits on MariaDB.
    PrimaryKeyConstraint("category", "kind", "case_key"),
    prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


def case_keys(rows: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """Each flagged settlement row's case key (KEY columns)."""
    kind = rows["transaction_type"].astype("str").to_numpy(dtype=object)
    key = np.where(kind == cat.PAYMENT, rows["merchant_invoice"].astype("str"),
                   refund_keys(rows).astype("str")).astype(object)
    invalid = (rows["category"].astype("str") == cat.INVALID_ROW).to_numpy() | (key == "")
    if invalid.any():  # a key of its date and line, made for those rows only
        lines = rows["line_no"].to_numpy(dtype=np.int64)[invalid]
        key[invalid] = [f"{day.isoformat()}:{line}" for line in lines.tolist()]
    return pd.DataFrame({"category": rows["category"].astype("str").to_numpy(dtype=object),
                         "kind": np.where(invalid, "ROW", kind), "case_key": key})


def _at_risk(delta: pd.Series, amount: pd.Series) -> pd.Series:
    """The money a case is about: the difference where the amounts differ, else the whole
    amount (a duplicate, a status, a date or the fees in question)."""
    differs = delta.notna() & (delta != 0)
    return delta.abs().where(differs, amount.abs()).fillna(0).astype("int64")


def _seen(result: ReconResult, day: dt.date) -> pd.DataFrame:
    """This run's exceptions as case occurrences: key, line, amount at risk, reason."""
    frames = []
    for rows in result.flagged.in_order(WRITE_BATCH_ROWS):
        keys = case_keys(rows, day)
        keys["line_no"] = rows["line_no"].to_numpy(dtype=np.int64)
        keys["amount_at_risk"] = _at_risk(rows["delta"], rows["gross"]).to_numpy()
        keys["delta"] = rows["delta"].astype("Int64").to_numpy()
        keys["reason"] = rows["reason"].astype("str").to_numpy(dtype=object)
        frames.append(keys)
    # A record a later date settled already (this date run after it) is no open problem.
    missing = result.missing.loc[result.missing["closed_by_date"].isna()]
    frames.append(pd.DataFrame({
        "category": cat.MISSING_IN_SETTLEMENT, "kind": missing["kind"].astype("str"),
        "case_key": missing["record_key"].astype("str"), "line_no": 0,
        "amount_at_risk": _at_risk(missing["amount"], missing["amount"]).to_numpy(),
        "delta": pd.array([pd.NA] * len(missing), dtype="Int64"),
        "reason": [f"{kind.lower()} of {day} not in the settlement file" for kind, day in
                   zip(missing["kind"].tolist(), missing["record_date"].tolist(),
                       strict=True)]}))
    seen = pd.concat(frames, ignore_index=True)
    return seen.astype({"line_no": "int64", "amount_at_risk": "int64", "delta": "Int64"})


@dataclass(frozen=True)
class CaseStanding:
    """The merchant's cases as a run leaves them: how many it opened, how many were
    resolved on its day (WIB), and every unresolved case's first date, state, claim due
    date and amount at risk (minor units)."""

    opened: int
    resolved_today: int
    unresolved: list[tuple[dt.date, str, dt.date | None, int, int]]  # with count, amount


def record_cases(conn: Any, result: ReconResult, merchant: str, day: dt.date, run_id: int,
                 at: dt.datetime) -> CaseStanding:
    """What the run's exceptions and closures do to the merchant's cases, in the run's
    transaction: a new problem opens a case, a resolved one seen on a later date than it
    was last seen reopens, a MISSING_IN_SETTLEMENT record a later file settles resolves
    as settled_later; the date's occurrences are replaced. A re-run changes no state and
    loses no event."""
    seen = _seen(result, day)
    closed = pd.DataFrame({"category": cat.MISSING_IN_SETTLEMENT,
                           "kind": result.closures["kind"].astype("str"),
                           "case_key": result.closures["record_key"].astype("str")})
    money = {"amount_at_risk": minor_text(seen["amount_at_risk"]).to_pylist(),
             "delta": minor_text(seen["delta"]).to_pylist()}
    staged = pd.concat([seen[KEY].assign(seen=1, **money),
                        closed.assign(seen=0, amount_at_risk=None, delta=None)],
                       ignore_index=True)
    staged = staged.sort_values("seen", kind="stable").drop_duplicates(KEY, keep="last")
    _drop_staged(conn)
    STAGED_KEYS.create(conn)
    bulk_insert(conn, STAGED_KEYS, staged)
    source = f"run {run_id}"
    known = _known(conn, merchant)
    fresh = staged.loc[staged["seen"] == 1].merge(known[KEY], how="left", on=KEY,
                                                  indicator=True)
    new = fresh.loc[fresh["_merge"] == "left_only", [*KEY, "amount_at_risk", "delta"]]
    _system(conn, known, staged, merchant, day, at, source)
    c, s = recon_cases, STAGED_KEYS
    marked = and_(*(s.c[name] == c.c[name] for name in KEY), s.c.seen == 1)

    seen_here = exists(select(literal(1)).select_from(s).where(marked))
    # The amounts of the latest occurrence: this date's, unless a later date saw it. One
    # join with the staged keys (UPDATE … FROM, or MariaDB's multi-table UPDATE).
    conn.execute(update(c).where(c.c.merchant_id == merchant, c.c.last_seen <= day, marked)
                 .values(amount_at_risk=s.c.amount_at_risk, delta=s.c.delta))
    for column, later in (("last_seen", c.c.last_seen < day), ("first_seen", c.c.first_seen > day)):
        conn.execute(update(c).where(c.c.merchant_id == merchant, later, seen_here)
                     .values({column: day}))
    opened = _open(conn, merchant, day, new, at, source)
    ids = pd.concat([known[[*KEY, "case_id"]], opened], ignore_index=True)
    occurrences = seen.merge(ids, how="left", on=KEY)
    t = recon_case_occurrences
    conn.execute(delete(t).where(t.c.merchant_id == merchant, t.c.settlement_date == day))
    occurrences = occurrences.drop_duplicates(["case_id", "line_no"])
    bulk_insert(conn, t, pd.DataFrame({
        "case_id": occurrences["case_id"], "merchant_id": merchant,
        "settlement_date": day, "line_no": occurrences["line_no"], "run_id": run_id,
        "amount_at_risk": minor_text(occurrences["amount_at_risk"]).to_pylist(),
        "delta": minor_text(occurrences["delta"]).to_pylist(),
        "reason": occurrences["reason"]}))
    _drop_staged(conn)
    return CaseStanding(opened=len(new), resolved_today=_resolved_on(conn, merchant, at),
                        unresolved=_unresolved(conn, merchant))


def _resolved_on(conn: Any, merchant: str, at: dt.datetime) -> int:
    """The merchant's cases resolved on `at`'s day in WIB, by anyone."""
    start = dt.datetime.combine(at.astimezone(WIB).date(), dt.time(), WIB).astimezone(dt.UTC)
    c, e = recon_cases, recon_case_events
    return int(conn.execute(select(func.count(func.distinct(e.c.case_id))).select_from(
        e.join(c, c.c.case_id == e.c.case_id)).where(
        c.c.merchant_id == merchant, e.c.to_state == cases.RESOLVED, e.c.at >= start,
        c.c.state == cases.RESOLVED)).scalar_one())


def _unresolved(conn: Any, merchant: str
                ) -> list[tuple[dt.date, str, dt.date | None, int, int]]:
    """The merchant's unresolved cases by first date, state and claim due date: how many,
    and their amount at risk (minor units)."""
    c = recon_cases
    rows = conn.execute(select(c.c.first_seen, c.c.state, c.c.claim_due, func.count(),
                               func.sum(c.c.amount_at_risk)).where(
        c.c.merchant_id == merchant, c.c.state.in_(cases.UNRESOLVED)).group_by(
        c.c.first_seen, c.c.state, c.c.claim_due))
    return [(first, state, due, int(count), to_minor(amount or 0))
            for first, state, due, count, amount in rows]


def _drop_staged(conn: Any) -> None:
    """The staged keys' table gone, if a failed run on this connection left it. Never a
    plain DROP TABLE on MariaDB, which would commit the run's transaction there."""
    name = STAGED_KEYS.name
    conn.execute(text({"mysql": f"DROP TEMPORARY TABLE IF EXISTS {name}",
                       "sqlite": f"DROP TABLE IF EXISTS temp.{name}"}
                      .get(conn.dialect.name, f"DROP TABLE IF EXISTS {name}")))


def _known(conn: Any, merchant: str) -> pd.DataFrame:
    """The merchant's cases among the staged keys."""
    c = recon_cases
    query = select(c.c.case_id, c.c.category, c.c.kind, c.c.case_key, c.c.state, c.c.version,
                   c.c.last_seen).join(
        STAGED_KEYS, and_(*(STAGED_KEYS.c[name] == c.c[name] for name in KEY))).where(
        c.c.merchant_id == merchant)
    rows = conn.execute(query).all()
    return pd.DataFrame(rows, columns=["case_id", *KEY, "state", "version", "last_seen"])


def _open(conn: Any, merchant: str, day: dt.date, new: pd.DataFrame, at: dt.datetime,
          source: str) -> pd.DataFrame:
    """New cases, numbered on from the merchant's last number, each with its opening
    event, written in bulk. Their keys and IDs."""
    if new.empty:
        return pd.DataFrame(columns=[*KEY, "case_id"])
    numbers = recon_case_numbers
    last = conn.execute(select(numbers.c.last_number).where(
        numbers.c.merchant_id == merchant).with_for_update()).scalar_one_or_none()
    first = (last or 0) + 1
    if last is None:
        conn.execute(insert(numbers).values(merchant_id=merchant, last_number=len(new)))
    else:
        conn.execute(update(numbers).where(numbers.c.merchant_id == merchant)
                     .values(last_number=last + len(new)))
    ids = [f"{merchant}-{n:06d}" for n in range(first, first + len(new))]
    bulk_insert(conn, recon_cases, pd.DataFrame({
        "case_id": ids, "merchant_id": merchant, **{name: new[name].to_numpy() for name in KEY},
        "first_seen": day, "last_seen": day, "state": cases.OPEN, "owner": "",
        "resolution": "", "note": "", "proposed_by": "", "version": 1,
        "amount_at_risk": new["amount_at_risk"].to_numpy(), "delta": new["delta"].to_numpy()}))
    bulk_insert(conn, recon_case_events, pd.DataFrame({
        "case_id": ids, "at": _moment_text(conn, at), "actor": cases.SYSTEM,
        "action": cases.OPENED, "to_state": cases.OPEN, "owner": "", "resolution": "",
        "note": "", "source": source}))
    return new[KEY].assign(case_id=ids)


def _moment_text(conn: Any, at: dt.datetime) -> str:
    """A time as a bulk write gives it to the database: with its zone to PostgreSQL, UTC
    in SQLAlchemy's own text elsewhere (the zone-less databases keep UTC)."""
    utc = at.astimezone(dt.UTC)
    return utc.isoformat() if conn.dialect.name == "postgresql" else utc.strftime(
        "%Y-%m-%d %H:%M:%S.%f")


def _system(conn: Any, known: pd.DataFrame, staged: pd.DataFrame, merchant: str,
            day: dt.date, at: dt.datetime, source: str) -> None:
    """Reopen what comes back on a later date; resolve what a later file settles."""
    if known.empty:
        return
    joined = known.merge(staged, how="left", on=KEY)
    back = joined.loc[(joined["seen"] == 1) & (joined["last_seen"] < day)]
    settled = joined.loc[(joined["seen"] == 0)]
    for action, chosen in ((cases.SEEN_AGAIN, back), (cases.SETTLED, settled)):
        for row in chosen.itertuples(index=False):
            case = CaseState(state=str(row.state), version=int(row.version))
            event = cases.system_event(case, action, at, source)
            if event is not None:
                _append(conn, str(row.case_id), case, event)


def _append(conn: Any, case_id: str, case: CaseState, event: Event) -> CaseState:
    """One event appended and the case's state moved with it, if the case is still at
    the version it was read at (else CaseRefused: someone acted on it meanwhile)."""
    after = cases.apply(case, event)
    conn.execute(insert(recon_case_events).values(
        case_id=case_id, **{f.name: getattr(event, f.name) for f in dataclasses.fields(event)}))
    c = recon_cases
    moved = conn.execute(update(c).where(c.c.case_id == case_id, c.c.version == case.version)
                         .values(**_state_columns(after))).rowcount
    if moved != 1:
        raise CaseRefused(f"{case_id} changed while this was applied; nothing was applied")
    return after


def _state_columns(case: CaseState) -> dict[str, Any]:
    return {"state": case.state, "owner": case.owner, "resolution": case.resolution,
            "note": case.note, "proposed_by": case.proposed_by, "claim_due": case.claim_due,
            "raised_on": case.raised_on, "version": case.version}


# ------------------------------------------------------------------------ people's actions


@dataclass(frozen=True)
class CaseRow:
    """A case as listed: its key, dates, state and the amount at risk of its latest
    occurrence (minor units)."""

    case_id: str
    merchant_id: str
    category: str
    kind: str
    case_key: str
    first_seen: dt.date
    last_seen: dt.date
    amount_at_risk: int
    delta: int | None
    state: CaseState


def _case_rows(conn: Any, *conditions: Any) -> list[CaseRow]:
    c = recon_cases
    rows = conn.execute(select(c).where(*conditions)
                        .order_by(c.c.first_seen, c.c.case_id)).mappings().all()
    return [CaseRow(
        case_id=r["case_id"], merchant_id=r["merchant_id"], category=r["category"],
        kind=r["kind"], case_key=r["case_key"], first_seen=r["first_seen"],
        last_seen=r["last_seen"],
        amount_at_risk=to_minor(r["amount_at_risk"] or 0),
        delta=None if r["delta"] is None else to_minor(r["delta"]),
        state=CaseState(state=r["state"], owner=r["owner"], resolution=r["resolution"],
                        note=r["note"], proposed_by=r["proposed_by"],
                        claim_due=r["claim_due"], raised_on=r["raised_on"],
                        version=r["version"])) for r in rows]


def list_cases(engine: Engine, merchant: str | None = None,
               states: Sequence[str] = (), category: str | None = None,
               owner: str | None = None) -> list[CaseRow]:
    """Cases, oldest first, narrowed by merchant, state, category and owner."""
    c = recon_cases
    conditions = [c.c.merchant_id == merchant] if merchant else []
    conditions += [c.c.state.in_(list(states))] if states else []
    conditions += [c.c.category == category] if category else []
    conditions += [c.c.owner == owner] if owner is not None else []
    try:
        with engine.connect() as conn:
            return _case_rows(conn, *conditions)
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc


def case_history(engine: Engine, case_id: str) -> tuple[CaseRow, list[Event],
                                                         list[dict[str, Any]]]:
    """A case, its events in order and its occurrences by date."""
    try:
        with engine.connect() as conn:
            found = _case_rows(conn, recon_cases.c.case_id == case_id)
            if not found:
                raise CaseRefused(f"no case {case_id}")
            e, o = recon_case_events, recon_case_occurrences
            events = [_event(r) for r in conn.execute(
                select(e).where(e.c.case_id == case_id).order_by(e.c.event_id)).mappings()]
            seen = [dict(r) for r in conn.execute(
                select(o.c.settlement_date, o.c.line_no, o.c.run_id, o.c.amount_at_risk,
                       o.c.reason).where(o.c.case_id == case_id)
                .order_by(o.c.settlement_date, o.c.line_no)).mappings()]
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return found[0], events, seen


def _event(row: Any) -> Event:
    """An event as kept; times without a zone (SQLite, MariaDB) are UTC."""
    values = {f.name: row[f.name] for f in dataclasses.fields(Event)}
    if values["at"].tzinfo is None:
        values["at"] = values["at"].replace(tzinfo=dt.UTC)
    return Event(**values)


@dataclass(frozen=True)
class Action:
    """What a person does to a case: `cases.decide`'s arguments."""

    action: str
    actor: str
    source: str
    owner: str = ""
    resolution: str = ""
    note: str = ""
    version: int | None = None  # the version the person saw (a workbook row's); None: any


def act(engine: Engine, case_ids: Sequence[str], action: Action, rules: cases.Rules,
        at: dt.datetime | None = None) -> list[tuple[str, Event]]:
    """`action` on every case of `case_ids`, all or nothing: the first refusal (an unknown
    ID, a transition the state does not allow, a changed version) applies nothing."""
    at = at or dt.datetime.now(dt.UTC)
    done = []
    try:
        with engine.begin() as conn:
            for case_id in case_ids:
                found = _case_rows(conn, recon_cases.c.case_id == case_id)
                if not found:
                    raise CaseRefused(f"no case {case_id}")
                row = found[0]
                if action.version is not None and action.version != row.state.version:
                    raise CaseRefused(f"{case_id} changed since version {action.version} "
                                      f"(now {row.state.version})")
                event = cases.decide(row.state, action.action, action.actor, at, action.source,
                                     rules, amount_at_risk=row.amount_at_risk,
                                     owner=action.owner, resolution=action.resolution,
                                     note=action.note)
                _append(conn, case_id, row.state, event)
                done.append((case_id, event))
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return done


def events_fold(engine: Engine, case_id: str) -> CaseState:
    """The fold of a case's events, as kept (the state `recon_cases` must equal)."""
    _, events, _ = case_history(engine, case_id)
    return cases.fold(events)


def _edit_actions(edit: Any, case: CaseState) -> list[Action]:
    """What an edited Cases row asks of its case, as actions in order (none where the row
    is as written). CaseRefused where the row asks what no action does."""
    where = f"row {edit.line} ({edit.case_id})"
    target = edit.state or case.state
    if target not in cases.STATES:
        raise CaseRefused(f"{where}: State {edit.state!r} is not one of "
                          f"{', '.join(cases.STATES)}")
    note = edit.note if edit.note != case.note else ""
    owner = edit.owner if edit.owner != case.owner else ""
    if target == case.state:
        if edit.resolution != case.resolution:
            raise CaseRefused(f"{where}: Resolution changed but State is still {case.state} "
                              "(set State to RESOLVED to resolve)")
        return ([Action(cases.ASSIGN, "", "", owner=owner)] if owner else []) + (
            [Action(cases.NOTE, "", "", note=note)] if note else [])
    moves = {cases.ACKNOWLEDGED: cases.ACK, cases.REOPENED: cases.REOPEN,
             cases.RESOLVED: (cases.APPROVE if case.state == cases.PENDING_APPROVAL
                              else cases.RESOLVE),
             cases.PENDING_APPROVAL: cases.RESOLVE}
    if target not in moves:
        raise CaseRefused(f"{where}: State {target} is not set from a workbook"
                          + (" (recon cases raise sends the claim)"
                             if target == cases.RAISED_WITH_OVO else ""))
    action = moves[target]
    first = Action(action, "", "", owner=owner if action == cases.ACK else "",
                   resolution=edit.resolution if action == cases.RESOLVE else "", note=note)
    return [first] + ([Action(cases.ASSIGN, "", "", owner=owner)]
                      if owner and action != cases.ACK else [])


def apply_edits(engine: Engine, edits: Sequence[Any], actor: str, rules: cases.Rules,
                dry_run: bool = False, at: dt.datetime | None = None
                ) -> list[tuple[str, Event]]:
    """An edited Cases sheet's rows as events, all or nothing: CaseRefused naming the row
    for an unknown ID, a case changed since the sheet was written (its version), an
    invalid transition or a resolution without its code; nothing is applied then, nor
    with `dry_run`."""
    at = at or dt.datetime.now(dt.UTC)
    done: list[tuple[str, Event]] = []
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            for edit in edits:
                found = _case_rows(conn, recon_cases.c.case_id == edit.case_id)
                if not found:
                    raise CaseRefused(f"row {edit.line}: no case {edit.case_id}")
                row, case = found[0], found[0].state
                if edit.version != case.version:
                    raise CaseRefused(f"row {edit.line} ({edit.case_id}): the case changed "
                                      f"since the workbook was written (version "
                                      f"{edit.version}, now {case.version})")
                for step in _edit_actions(edit, case):
                    try:
                        event = cases.decide(case, step.action, actor, at, "workbook import",
                                             rules, amount_at_risk=row.amount_at_risk,
                                             owner=step.owner, resolution=step.resolution,
                                             note=step.note)
                    except CaseRefused as exc:
                        raise CaseRefused(f"row {edit.line} ({edit.case_id}): "
                                          f"{exc.message}") from exc
                    case = _append(conn, edit.case_id, case, event)
                    done.append((edit.case_id, event))
            if dry_run:
                transaction.rollback()
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return done


def claim_lines(conn: Any, rows: Sequence[CaseRow]) -> list[ClaimLine]:
    """The transactions of cases, as a claim to OVO lists them: the keys and amounts of
    each case's latest exception row, and the transaction time its record gives."""
    o, x = recon_case_occurrences, recon_exceptions
    lines = []
    for row in rows:
        seen = conn.execute(select(o.c.settlement_date, o.c.line_no, o.c.reason).where(
            o.c.case_id == row.case_id).order_by(o.c.settlement_date.desc(), o.c.line_no)
            .limit(1)).first()
        found: dict[str, Any] = {}
        if seen is not None:
            at_line = (x.c.line_no == seen.line_no if seen.line_no
                       else and_(x.c.category == row.category, x.c.record_key == row.case_key))
            found = dict(conn.execute(select(x).where(
                x.c.merchant_id == row.merchant_id, x.c.settlement_date == seen.settlement_date,
                at_line)).mappings().first() or {})
        invoice = found.get("merchant_invoice") or row.case_key
        lines.append(ClaimLine(
            case_id=row.case_id, merchant_invoice=invoice,
            ovo_reference_no=found.get("ovo_reference_no") or "",
            transaction_time_wib=_record_time(conn, row, invoice),
            settled_amount=_minor_or_none(found.get("file_amount")),
            recorded_amount=_minor_or_none(found.get("record_amount")),
            delta=_minor_or_none(found.get("delta")),
            what_is_wrong=f"{row.category}: "
                          f"{found.get('reason') or (seen.reason if seen else '')}"))
    return lines


def _minor_or_none(value: Any) -> int | None:
    return None if value is None else to_minor(value)


def _record_time(conn: Any, row: CaseRow, invoice: str) -> str:
    """The record's own time in WIB: the payment's, or the refund's for a refund case."""
    if row.kind == cat.REFUND:
        t, column, key = ovo_refunds, ovo_refunds.c.refund_time, row.case_key
        where = t.c.partner_refund_no == key
    else:
        t, column = ovo_payments, ovo_payments.c.transaction_time
        where = and_(t.c.partner_reference_no == invoice, t.c.merchant_id == row.merchant_id)
    moment = conn.execute(select(column).where(where)).scalar_one_or_none()
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")


def raise_cases(engine: Engine, case_ids: Sequence[str], actor: str, rules: cases.Rules,
                send: Callable[[list[ClaimLine], dt.date], str], note: str = "",
                at: dt.datetime | None = None) -> tuple[list[tuple[str, Event]], str]:
    """Raise cases with OVO, all or nothing, in one transaction: each case must be one a
    claim can be raised for; `send` is given the claim's lines and due date and sends
    (or writes) the email; the cases become RAISED_WITH_OVO only once it went. Returns
    the events and what `send` said."""
    at = at or dt.datetime.now(dt.UTC)
    done: list[tuple[str, Event]] = []
    try:
        with engine.begin() as conn:
            rows = []
            for case_id in case_ids:
                found = _case_rows(conn, recon_cases.c.case_id == case_id)
                if not found:
                    raise CaseRefused(f"no case {case_id}")
                rows.append(found[0])
            events = [cases.decide(row.state, cases.RAISE, actor, at, "command line", rules,
                                   amount_at_risk=row.amount_at_risk, note=note)
                      for row in rows]
            merchants = {row.merchant_id for row in rows}
            if len(merchants) != 1:
                raise CaseRefused(f"a claim is one merchant's; these cases are of "
                                  f"{', '.join(sorted(merchants))}")
            due = events[0].due_date
            assert due is not None
            sent = send(claim_lines(conn, rows), due)
            for row, event in zip(rows, events, strict=True):
                _append(conn, row.case_id, row.state, event)
                done.append((row.case_id, event))
    except SQLAlchemyError as exc:
        raise database_error(engine, exc) from exc
    return done, sent
