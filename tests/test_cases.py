"""Exception cases: the state machine as a truth table, maker-checker, the fold of events,
and ages against the working-day SLAs."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.core import cases
from recon.core.calendar import WorkingCalendar
from recon.core.cases import (
    ACKNOWLEDGED,
    OPEN,
    PENDING_APPROVAL,
    RAISED_WITH_OVO,
    REOPENED,
    RESOLVED,
    CaseRefused,
    CaseState,
    Rules,
)

AT = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
CAL = WorkingCalendar()
RULES = Rules(approval_threshold=10_000_000, ovo_claim_sla_days=5, calendar=CAL)

#: Every action people take, from every state: the state it leaves, or None (refused).
EXPECTED = {
    cases.ACK: {OPEN: ACKNOWLEDGED, REOPENED: ACKNOWLEDGED},
    cases.ASSIGN: {OPEN: OPEN, ACKNOWLEDGED: ACKNOWLEDGED, RAISED_WITH_OVO: RAISED_WITH_OVO,
                   PENDING_APPROVAL: PENDING_APPROVAL, REOPENED: REOPENED},
    cases.NOTE: {state: state for state in cases.STATES},
    cases.RAISE: {OPEN: RAISED_WITH_OVO, ACKNOWLEDGED: RAISED_WITH_OVO,
                  REOPENED: RAISED_WITH_OVO},
    cases.RESOLVE: {OPEN: RESOLVED, ACKNOWLEDGED: RESOLVED, RAISED_WITH_OVO: RESOLVED,
                    REOPENED: RESOLVED},
    cases.APPROVE: {PENDING_APPROVAL: RESOLVED},
    cases.REOPEN: {RESOLVED: REOPENED, PENDING_APPROVAL: REOPENED},
}


def _act(case: CaseState, action: str, actor: str = "ana", **given: object) -> cases.Event:
    defaults: dict[str, object] = {
        "owner": "budi" if action == cases.ASSIGN else "",
        "note": "checked with OVO" if action == cases.NOTE else "",
        "resolution": "ovo_adjusted" if action == cases.RESOLVE else ""}
    return cases.decide(case, action, actor, AT, "command line", RULES,
                        **{**defaults, **given})  # type: ignore[arg-type]


@pytest.mark.parametrize("action", cases.PEOPLE_ACTIONS)
@pytest.mark.parametrize("state", cases.STATES)
def test_every_transition_allowed_or_refused(state: str, action: str) -> None:
    case = CaseState(state=state, proposed_by="dewi" if state == PENDING_APPROVAL else "")
    expected = EXPECTED[action].get(state)
    if expected is None:
        with pytest.raises(CaseRefused, match=f"cannot {action} a case that is {state}"):
            _act(case, action)
        return
    event = _act(case, action)
    assert (event.from_state, event.to_state) == (state, expected)
    assert cases.apply(case, event).state == expected


def test_a_refusal_is_one_line_naming_what_is_allowed() -> None:
    with pytest.raises(CaseRefused) as refused:
        _act(CaseState(state=RESOLVED), cases.ACK)
    assert refused.value.one_line() == (
        "CASE_REFUSED: cannot ack a case that is RESOLVED (only one that is OPEN or REOPENED)")


def test_what_actions_need() -> None:
    open_case = CaseState(state=OPEN)
    for action, needs, said in [
            (cases.RESOLVE, {"resolution": ""}, "a resolution needs its code"),
            (cases.RESOLVE, {"resolution": "lost"}, "got 'lost'"),
            (cases.RESOLVE, {"resolution": "written_off"}, "a write-off needs a note"),
            (cases.ASSIGN, {"owner": ""}, "assign needs an owner"),
            (cases.NOTE, {"note": "  "}, "a note needs its text")]:
        with pytest.raises(CaseRefused, match=said):
            _act(open_case, action, **needs)
    with pytest.raises(CaseRefused, match="who acts must be named"):
        _act(open_case, cases.ACK, actor=" ")


def test_ack_takes_the_actor_as_owner_unless_one_is_given() -> None:
    assert cases.apply(CaseState(state=OPEN), _act(CaseState(state=OPEN), cases.ACK)).owner == "ana"
    given_owner = _act(CaseState(state=OPEN), cases.ACK, owner="budi")
    assert cases.apply(CaseState(state=OPEN), given_owner).owner == "budi"


def test_a_write_off_or_a_large_amount_waits_for_a_different_approver() -> None:
    case = CaseState(state=ACKNOWLEDGED, owner="ana")
    small = _act(case, cases.RESOLVE, amount_at_risk=RULES.approval_threshold)
    assert small.to_state == RESOLVED
    for event in (_act(case, cases.RESOLVE, amount_at_risk=RULES.approval_threshold + 1),
                  _act(case, cases.RESOLVE, resolution="written_off", note="customer gone")):
        pending = cases.apply(case, event)
        assert (pending.state, pending.proposed_by) == (PENDING_APPROVAL, "ana")
        with pytest.raises(CaseRefused, match="ana asked for this resolution; a different"):
            _act(pending, cases.APPROVE, actor="ana")
        approved = cases.apply(pending, _act(pending, cases.APPROVE, actor="dewi"))
        assert (approved.state, approved.resolution) == (RESOLVED, event.resolution)


def test_a_claim_is_due_after_the_claim_sla_in_working_days() -> None:
    at = dt.datetime(2026, 12, 22, 3, 0, tzinfo=dt.UTC)  # Tuesday; 24 and 25 Dec are off
    event = cases.decide(CaseState(state=ACKNOWLEDGED), cases.RAISE, "ana", at, "command line",
                         RULES)
    assert event.due_date == dt.date(2026, 12, 31)  # 23, 28, 29, 30 and 31 Dec
    raised = cases.apply(CaseState(state=ACKNOWLEDGED), event)
    assert (raised.claim_due, raised.raised_on) == (dt.date(2026, 12, 31), at.date())
    assert not cases.age_of(raised, at.date(), dt.date(2026, 12, 31), CAL, 2).claim_overdue
    assert not cases.age_of(raised, at.date(), dt.date(2027, 1, 1), CAL, 2).claim_overdue
    assert cases.age_of(raised, at.date(), dt.date(2027, 1, 4), CAL, 2).claim_overdue


@pytest.mark.parametrize(("first_seen", "today", "age", "ack_due", "overdue"), [
    # Christmas: the cuti bersama (24 Dec) and Christmas Day are not working days.
    (dt.date(2026, 12, 23), dt.date(2026, 12, 28), 1, dt.date(2026, 12, 29), False),
    (dt.date(2026, 12, 23), dt.date(2026, 12, 30), 3, dt.date(2026, 12, 29), True),
    # Lebaran 2026: Nyepi (18-19 Mar) and Idul Fitri with its cuti bersama (20-24 Mar).
    (dt.date(2026, 3, 17), dt.date(2026, 3, 25), 1, dt.date(2026, 3, 26), False),
    (dt.date(2026, 3, 17), dt.date(2026, 3, 27), 3, dt.date(2026, 3, 26), True),
])
def test_ages_in_working_days_across_the_holidays(first_seen: dt.date, today: dt.date,
                                                  age: int, ack_due: dt.date,
                                                  overdue: bool) -> None:
    found = cases.age_of(CaseState(state=OPEN), first_seen, today, CAL, 2)
    assert (found.working_days, found.ack_due, found.ack_overdue) == (age, ack_due, overdue)
    acknowledged = cases.age_of(CaseState(state=ACKNOWLEDGED), first_seen, today, CAL, 2)
    assert not acknowledged.overdue


@pytest.mark.parametrize(("days", "bucket"), [(0, "0-2"), (2, "0-2"), (3, "3-5"), (5, "3-5"),
                                              (6, "6-10"), (10, "6-10"), (11, ">10")])
def test_age_buckets(days: int, bucket: str) -> None:
    assert cases.Age(days, dt.date(2026, 12, 1), False, False).bucket == bucket


def test_runs_open_reopen_and_settle_cases() -> None:
    opened = cases.system_event(None, cases.SEEN_AGAIN, AT, "run 1")
    assert opened is not None and (opened.action, opened.to_state) == (cases.OPENED, OPEN)
    case = cases.fold([opened])
    assert cases.system_event(case, cases.SEEN_AGAIN, AT, "run 2") is None  # still open
    settled = cases.system_event(case, cases.SETTLED, AT, "run 3")
    assert settled is not None and settled.resolution == "settled_later"
    case = cases.apply(case, settled)
    assert (case.state, case.resolution) == (RESOLVED, "settled_later")
    assert cases.system_event(case, cases.SETTLED, AT, "run 4") is None
    back = cases.system_event(case, cases.SEEN_AGAIN, AT, "run 5")
    assert back is not None
    case = cases.apply(case, back)
    assert (case.state, case.resolution) == (REOPENED, "")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*cases.PEOPLE_ACTIONS, cases.SEEN_AGAIN,
                                           cases.SETTLED]),
                          st.sampled_from(["ana", "budi"]),
                          st.sampled_from(cases.RESOLUTIONS),
                          st.integers(min_value=0, max_value=2 * RULES.approval_threshold)),
                max_size=30))
def test_the_state_is_the_fold_of_the_events_kept(
        steps: list[tuple[str, str, str, int]]) -> None:
    """Random actions, allowed or refused: the state kept step by step equals the fold of
    the events kept, each event leaves the state it says, and a refusal keeps nothing."""
    events = [cases.system_event(None, cases.SEEN_AGAIN, AT, "run 1")]
    case = cases.fold(events)  # type: ignore[arg-type]
    for action, actor, resolution, amount in steps:
        if action in (cases.SEEN_AGAIN, cases.SETTLED):
            event = cases.system_event(case, action, AT, "run 2")
            if event is None:
                continue
        else:
            try:
                event = _act(case, action, actor, resolution=resolution, note="why",
                             amount_at_risk=amount)
            except CaseRefused:
                continue
        assert event.from_state == case.state
        case = cases.apply(case, event)
        assert case.state == event.to_state
        events.append(event)
        assert cases.fold(events) == case  # type: ignore[arg-type]
    assert case.version == len(events)


def test_the_figures_a_report_shows() -> None:
    """Aged as of the settlement date, 25 Mar: a case seen on 17 Mar is 1 working day old
    (Nyepi and Lebaran between) and, due the same day, its acknowledgement overdue; one
    seen on 2 Mar is 12 working days old, and its claim due on 16 Mar overdue."""
    found = cases.figures(2, 1, [
        (dt.date(2026, 3, 17), OPEN, None, 2, 150),
        (dt.date(2026, 3, 17), ACKNOWLEDGED, None, 1, 50),
        (dt.date(2026, 3, 2), RAISED_WITH_OVO, dt.date(2026, 3, 16), 1, 7),
        (dt.date(2026, 3, 24), REOPENED, None, 1, 1)], dt.date(2026, 3, 25), CAL, 0)
    assert found.open_by_age == {"0-2": (4, 201), "3-5": (0, 0), "6-10": (0, 0),
                                 ">10": (1, 7)}
    assert (found.overdue_acknowledgements, found.overdue_claims) == (3, 1)
    assert found.to_dict()["open_by_age"]["0-2"] == {"cases": 4, "amount_at_risk": "2.01"}
