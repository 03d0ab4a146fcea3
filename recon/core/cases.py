"""Exception cases: the states a case moves through, the events that move it, and its age
against the working-day SLAs. Pure: the store keeps the events, this decides them.

A case's state is always the fold of its events in order (`fold`); an action is checked
against the state it would leave (`decide`), which refuses an invalid one with a
one-line reason (`CaseRefused`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from recon.core.calendar import WorkingCalendar, wib_date
from recon.core.errors import ReconError
from recon.core.money import format_amount

OPEN = "OPEN"
ACKNOWLEDGED = "ACKNOWLEDGED"
RAISED_WITH_OVO = "RAISED_WITH_OVO"
PENDING_APPROVAL = "PENDING_APPROVAL"
RESOLVED = "RESOLVED"
REOPENED = "REOPENED"
STATES = (OPEN, ACKNOWLEDGED, RAISED_WITH_OVO, PENDING_APPROVAL, RESOLVED, REOPENED)
#: States in which a case still needs someone.
UNRESOLVED = (OPEN, ACKNOWLEDGED, RAISED_WITH_OVO, PENDING_APPROVAL, REOPENED)
#: States in which a case waits for its first acknowledgement.
AWAITING_ACK = (OPEN, REOPENED)

RESOLUTIONS = ("settled_later", "ovo_adjusted", "records_corrected", "refunded_to_customer",
               "written_off", "duplicate_confirmed", "not_an_issue")
#: Resolutions that need a second person's approval whatever the amount.
ALWAYS_APPROVED = frozenset({"written_off"})

SYSTEM = "system"

# Actions people take (the command line, the workbook) and those the runs take.
OPENED = "opened"
ACK = "ack"
ASSIGN = "assign"
NOTE = "note"
RAISE = "raise"
RESOLVE = "resolve"
APPROVE = "approve"
REOPEN = "reopen"
SEEN_AGAIN = "seen_again"
SETTLED = "settled"
PEOPLE_ACTIONS = (ACK, ASSIGN, NOTE, RAISE, RESOLVE, APPROVE, REOPEN)

#: The states each action may start from, and the state it leaves (None: unchanged).
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    ACK: ((OPEN, REOPENED), ACKNOWLEDGED),
    ASSIGN: (UNRESOLVED, None),
    NOTE: (STATES, None),
    RAISE: ((OPEN, ACKNOWLEDGED, REOPENED), RAISED_WITH_OVO),
    RESOLVE: ((OPEN, ACKNOWLEDGED, RAISED_WITH_OVO, REOPENED), RESOLVED),
    APPROVE: ((PENDING_APPROVAL,), RESOLVED),
    REOPEN: ((RESOLVED, PENDING_APPROVAL), REOPENED),
    SEEN_AGAIN: ((RESOLVED,), REOPENED),
    SETTLED: ((OPEN, ACKNOWLEDGED, RAISED_WITH_OVO, PENDING_APPROVAL, REOPENED), RESOLVED),
}


class CaseRefused(ReconError):
    """An action a case's state or the rules do not allow; nothing was applied."""

    reason_code = "CASE_REFUSED"
    exit_code = 11


@dataclass(frozen=True)
class Event:
    """One entry of a case's history, as kept (append-only)."""

    action: str
    actor: str
    at: dt.datetime  # UTC
    from_state: str | None
    to_state: str
    source: str  # command line, workbook import, run <id>, system
    owner: str = ""
    resolution: str = ""
    note: str = ""
    due_date: dt.date | None = None  # what a claim to OVO is due by


@dataclass(frozen=True)
class CaseState:
    """What a case is now: the fold of its events."""

    state: str
    owner: str = ""
    resolution: str = ""  # resolved, or proposed while PENDING_APPROVAL
    note: str = ""
    proposed_by: str = ""  # who asked for the approval
    claim_due: dt.date | None = None
    raised_on: dt.date | None = None
    version: int = 0  # events applied; a workbook row names the version it was written at


def apply(case: CaseState | None, event: Event) -> CaseState:
    """The state after `event`. Events are applied as kept, never checked again here."""
    if case is None:
        return CaseState(state=event.to_state, owner=event.owner, note=event.note, version=1)
    changes: dict[str, object] = {"state": event.to_state, "version": case.version + 1}
    if event.owner:
        changes["owner"] = event.owner
    if event.note:
        changes["note"] = event.note
    if event.action == RAISE:
        changes["claim_due"] = event.due_date
        changes["raised_on"] = wib_date(event.at)
    if event.to_state == PENDING_APPROVAL:
        changes["resolution"], changes["proposed_by"] = event.resolution, event.actor
    elif event.to_state == RESOLVED:
        changes["resolution"] = event.resolution or case.resolution
        changes["proposed_by"] = ""
    elif event.to_state == REOPENED:
        changes["resolution"], changes["proposed_by"] = "", ""
    return dataclasses.replace(case, **changes)  # type: ignore[arg-type]


def fold(events: Iterable[Event]) -> CaseState:
    """A case's state from its events in order."""
    case: CaseState | None = None
    for event in events:
        case = apply(case, event)
    if case is None:
        raise ValueError("a case has at least its opening event")
    return case


@dataclass(frozen=True)
class Rules:
    """What a resolution needs: approval over `approval_threshold` (IDR, minor units) or
    for the resolutions in ALWAYS_APPROVED; what a claim to OVO is given to answer."""

    approval_threshold: int
    ovo_claim_sla_days: int
    calendar: WorkingCalendar


def decide(case: CaseState, action: str, actor: str, at: dt.datetime, source: str,
           rules: Rules, *, amount_at_risk: int = 0, owner: str = "", resolution: str = "",
           note: str = "") -> Event:
    """The event `action` by `actor` makes on `case`, or CaseRefused with the reason."""
    if not actor.strip():
        raise CaseRefused("who acts must be named (--by)")
    allowed, to_state = TRANSITIONS[action]
    if case.state not in allowed:
        raise CaseRefused(f"cannot {action} a case that is {case.state} "
                          f"(only one that is {' or '.join(allowed)})")
    due: dt.date | None = None
    if action == ACK:
        owner = owner or case.owner or actor
    elif action == ASSIGN and not owner:
        raise CaseRefused("assign needs an owner (--owner)")
    elif action == NOTE and not note.strip():
        raise CaseRefused("a note needs its text (--note)")
    elif action == RAISE:
        due = rules.calendar.add_working_days(wib_date(at), rules.ovo_claim_sla_days)
    elif action == RESOLVE:
        to_state = _resolution(case, resolution, note, amount_at_risk, rules)
    elif action == APPROVE and actor == case.proposed_by:
        raise CaseRefused(f"{actor} asked for this resolution; a different person approves it")
    return Event(action=action, actor=actor, at=at, from_state=case.state,
                 to_state=to_state or case.state, source=source, owner=owner,
                 resolution=resolution if action == RESOLVE else "", note=note,
                 due_date=due)


def _resolution(case: CaseState, resolution: str, note: str, amount_at_risk: int,
                rules: Rules) -> str:
    """The state a resolution leaves: RESOLVED, or PENDING_APPROVAL where it needs a
    second person."""
    if resolution not in RESOLUTIONS:
        raise CaseRefused(f"a resolution needs its code (--resolution), one of "
                          f"{', '.join(RESOLUTIONS)}; got {resolution or 'none'!r}")
    if resolution == "written_off" and not note.strip():
        raise CaseRefused("a write-off needs a note saying why (--note)")
    if resolution in ALWAYS_APPROVED or abs(amount_at_risk) > rules.approval_threshold:
        return PENDING_APPROVAL
    return RESOLVED


def system_event(case: CaseState | None, action: str, at: dt.datetime, source: str,
                 note: str = "") -> Event | None:
    """What a run does to a case: opens it, reopens it when a resolved problem comes back
    (`SEEN_AGAIN`), resolves it as settled_later (`SETTLED`); None where the state does
    not change (the problem is still open, or a settled case is already resolved)."""
    if case is None:
        return Event(action=OPENED, actor=SYSTEM, at=at, from_state=None, to_state=OPEN,
                     source=source, note=note)
    allowed, to_state = TRANSITIONS[action]
    if case.state not in allowed or to_state is None:
        return None
    return Event(action=action, actor=SYSTEM, at=at, from_state=case.state,
                 to_state=to_state, source=source, note=note,
                 resolution="settled_later" if action == SETTLED else "")


@dataclass(frozen=True)
class Age:
    """A case's age and SLAs in working days, as of a date."""

    working_days: int
    ack_due: dt.date
    ack_overdue: bool
    claim_overdue: bool

    @property
    def overdue(self) -> bool:
        return self.ack_overdue or self.claim_overdue

    @property
    def bucket(self) -> str:
        """The age bucket the daily summary counts it in."""
        days = self.working_days
        return "0-2" if days <= 2 else "3-5" if days <= 5 else "6-10" if days <= 10 else ">10"


AGE_BUCKETS = ("0-2", "3-5", "6-10", ">10")


def age_of(case: CaseState, first_seen: dt.date, today: dt.date, calendar: WorkingCalendar,
           ack_sla_days: int) -> Age:
    """Age since first seen; the acknowledgement is due `ack_sla_days` working days after
    it, and a claim to OVO by its due date. Overdue from the first working day past the
    due date."""
    ack_due = calendar.add_working_days(first_seen, ack_sla_days)

    def past(due: dt.date | None) -> bool:
        return due is not None and calendar.working_days_between(due, today) > 0

    return Age(
        working_days=calendar.working_days_between(first_seen, today),
        ack_due=ack_due,
        ack_overdue=case.state in AWAITING_ACK and past(ack_due),
        claim_overdue=case.state == RAISED_WITH_OVO and past(case.claim_due),
    )


@dataclass(frozen=True)
class ClaimLine:
    """One transaction of a claim, as OVO's settlement team looks it up."""

    case_id: str
    merchant_invoice: str
    ovo_reference_no: str
    transaction_time_wib: str  # YYYY-MM-DD HH:MM:SS, or empty where no record has it
    settled_amount: int | None  # minor units: what the file settled
    recorded_amount: int | None  # minor units: what the merchant's records say
    delta: int | None
    what_is_wrong: str


@dataclass(frozen=True)
class CaseFigures:
    """The cases as a run's report shows them: opened by the run, resolved on its day,
    the unresolved by age bucket (count and amount at risk, minor units), and the overdue
    acknowledgements and claims."""

    opened: int
    resolved: int
    open_by_age: dict[str, tuple[int, int]]
    overdue_acknowledgements: int
    overdue_claims: int

    def to_dict(self) -> dict[str, object]:
        return {"opened": self.opened, "resolved": self.resolved,
                "open_by_age": {
                    bucket: {"cases": count, "amount_at_risk": format_amount(amount)}
                    for bucket, (count, amount) in self.open_by_age.items()},
                "overdue_acknowledgements": self.overdue_acknowledgements,
                "overdue_claims": self.overdue_claims}


def figures(opened: int, resolved: int,
            unresolved: Iterable[tuple[dt.date, str, dt.date | None, int, int]],
            as_of: dt.date, calendar: WorkingCalendar, ack_sla_days: int) -> CaseFigures:
    """The figures of the unresolved cases (by first seen, state and claim due: their
    count and amount at risk) as of a date: the run's settlement date, so the same data
    give the same report."""
    buckets = {bucket: [0, 0] for bucket in AGE_BUCKETS}
    acks = claims = 0
    for first_seen, state, claim_due, count, amount in unresolved:
        age = age_of(CaseState(state=state, claim_due=claim_due), first_seen, as_of, calendar,
                     ack_sla_days)
        buckets[age.bucket][0] += count
        buckets[age.bucket][1] += amount
        acks += count if age.ack_overdue else 0
        claims += count if age.claim_overdue else 0
    return CaseFigures(opened=opened, resolved=resolved,
                       open_by_age={b: (n, a) for b, (n, a) in buckets.items()},
                       overdue_acknowledgements=acks, overdue_claims=claims)
