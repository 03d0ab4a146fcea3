"""Exception cases kept by the runs and worked by people, on every database: a re-run and
a backfill keep every case, state and note; a problem that comes back later reopens its
case; a record a later file settles resolves its case; the state is the fold of the
events; IDs are never reused."""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, update

from recon.core import cases
from recon.core.calendar import WorkingCalendar
from recon.core.cases import CaseRefused
from recon.core.match import match_settlement
from recon.store.cases import Action, act, case_history, events_fold, list_cases
from recon.store.engine import init_db, make_engine
from recon.store.history import RunRecord
from recon.store.load import load_run_inputs
from recon.store.persist import persist_run
from recon.store.records import insert_records
from recon.store.tables import recon_case_events, recon_cases
from tests.builders import context, payment_row, rows_frame

WIB = dt.timezone(dt.timedelta(hours=7))
DAY1, DAY2, DAY3 = dt.date(2026, 11, 30), dt.date(2026, 12, 1), dt.date(2026, 12, 2)
CAL = WorkingCalendar()
RULES = cases.Rules(approval_threshold=100_000_000, ovo_claim_sla_days=5, calendar=CAL)


def _payment(ref: str, amount: str, when: dt.datetime) -> dict[str, object]:
    return {"partner_reference_no": ref, "reference_no": f"R-{ref}", "merchant_id": "M001",
            "amount": Decimal(amount), "pay_option": "OVO_CASH", "status": "00",
            "transaction_time": when}


def run_date(engine: Engine, day: dt.date, rows: list[dict[str, object]]) -> None:
    frame = rows_frame(rows, day)
    covered = CAL.covered_dates(day)
    inputs = load_run_inputs(engine, "M001", day, covered, frame)
    result = match_settlement(frame, inputs.payments, inputs.refunds, inputs.ledger,
                              inputs.open_items, context(day))
    persist_run(engine, result, RunRecord("M001", day, dt.datetime.now(dt.UTC), "f.csv",
                                          "0" * 64, len(rows), "f.csv", result.exceptions, {}))


def _by_key(engine: Engine) -> dict[tuple[str, str], cases.CaseState]:
    return {(row.category, row.case_key): row.state
            for row in list_cases(engine, "M001", cases.STATES)}


def _events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(recon_case_events))
                   .scalar_one())


def _assert_folds(engine: Engine) -> None:
    for row in list_cases(engine, "M001", cases.STATES):
        assert events_fold(engine, row.case_id) == row.state, row.case_id


def test_cases_across_runs_reruns_and_people(database_url: str) -> None:
    engine = make_engine(database_url)
    init_db(engine)
    friday = dt.datetime(2026, 11, 27, 10, 0, tzinfo=WIB)
    insert_records(engine, [_payment("INV-1", "100.00", friday),
                            _payment("INV-2", "50.00", friday),
                            _payment("UNSETTLED", "3.00", friday)])
    day1 = [payment_row("INV-1", "90.00", "2026-11-27 03:00:00"),
            payment_row("INV-2", "50.00", "2026-11-27 03:00:00")]
    run_date(engine, DAY1, day1)
    found = _by_key(engine)
    assert set(found) == {("AMOUNT_MISMATCH", "INV-1"), ("MISSING_IN_SETTLEMENT", "UNSETTLED")}
    assert {state.state for state in found.values()} == {cases.OPEN}
    ids = {row.case_key: row.case_id for row in list_cases(engine, "M001")}
    assert sorted(ids.values()) == ["M001-000001", "M001-000002"]

    act(engine, [ids["INV-1"]], Action(cases.ACK, "ana", "command line", note="asked OVO"),
        RULES)
    run_date(engine, DAY1, day1)  # a re-run: the same cases, the ack and the note kept
    again = _by_key(engine)
    assert again[("AMOUNT_MISMATCH", "INV-1")].state == cases.ACKNOWLEDGED
    assert again[("AMOUNT_MISMATCH", "INV-1")].note == "asked OVO"
    assert _events(engine) == 3
    row, _, seen = case_history(engine, ids["INV-1"])
    assert [s["settlement_date"] for s in seen] == [DAY1]
    assert row.amount_at_risk == 1000

    act(engine, [ids["INV-1"]], Action(cases.RESOLVE, "ana", "command line",
                                       resolution="ovo_adjusted"), RULES)
    # Day 2 settles UNSETTLED (its case resolves by the system) and INV-1 comes back.
    run_date(engine, DAY2, [payment_row("UNSETTLED", "3.00", "2026-11-27 03:00:00"),
                        payment_row("INV-1", "90.00", "2026-11-27 03:00:00")])
    after = _by_key(engine)
    assert (after[("MISSING_IN_SETTLEMENT", "UNSETTLED")].state,
            after[("MISSING_IN_SETTLEMENT", "UNSETTLED")].resolution) == (
        cases.RESOLVED, "settled_later")
    # New problems: INV-1 settled on day 1 already, UNSETTLED settled a day late.
    assert after[("DUPLICATE_SETTLEMENT", "INV-1")].state == cases.OPEN
    assert after[("TIMING_DIFFERENCE", "UNSETTLED")].state == cases.OPEN
    assert after[("AMOUNT_MISMATCH", "INV-1")].state == cases.RESOLVED

    # Day 1 re-run after day 2 (a backfill across it): nothing reopens, nothing is lost.
    events = _events(engine)
    run_date(engine, DAY1, day1)
    assert _by_key(engine) == after
    assert _events(engine) == events
    _assert_folds(engine)
    assert len(list_cases(engine, "M001", cases.STATES)) == 4


def test_a_resolved_problem_seen_on_a_later_date_reopens(database_url: str) -> None:
    """INV-9 settled on day 1 and again on day 2: a duplicate, resolved; settled a third
    time on day 3, the same case reopens."""
    engine = make_engine(database_url)
    init_db(engine)
    friday = dt.datetime(2026, 11, 27, 10, 0, tzinfo=WIB)
    insert_records(engine, [_payment("INV-9", "100.00", friday)])
    row = payment_row("INV-9", "100.00", "2026-11-27 03:00:00")
    run_date(engine, DAY1, [row])
    run_date(engine, DAY2, [row])
    (case,) = list_cases(engine, "M001")
    assert case.category == "DUPLICATE_SETTLEMENT"
    act(engine, [case.case_id], Action(cases.RESOLVE, "ana", "command line",
                                       resolution="duplicate_confirmed"), RULES)
    run_date(engine, DAY2, [row])  # a re-run of the date it was seen on: still resolved
    assert list_cases(engine, "M001", [cases.RESOLVED])[0].case_id == case.case_id
    run_date(engine, DAY3, [row])
    (back,) = list_cases(engine, "M001")
    assert (back.case_id, back.state.state, back.last_seen) == (
        case.case_id, cases.REOPENED, DAY3)
    _, history, seen = case_history(engine, case.case_id)
    assert [e.action for e in history] == [cases.OPENED, cases.RESOLVE, cases.SEEN_AGAIN]
    assert [s["settlement_date"] for s in seen] == [DAY2, DAY3]
    _assert_folds(engine)


def test_actions_are_all_or_nothing_and_check_the_version(database_url: str) -> None:
    engine = make_engine(database_url)
    init_db(engine)
    run_date(engine, DAY1, [payment_row("G1", "5.00", "2026-11-27 03:00:00"),
                        payment_row("G2", "6.00", "2026-11-27 03:00:00")])
    first, second = (row.case_id for row in list_cases(engine, "M001"))
    act(engine, [second], Action(cases.ACK, "ana", "command line"), RULES)
    with pytest.raises(CaseRefused, match="cannot ack a case that is ACKNOWLEDGED"):
        act(engine, [first, second], Action(cases.ACK, "budi", "command line"), RULES)
    with pytest.raises(CaseRefused, match="no case M001-999999"):
        act(engine, [first, "M001-999999"], Action(cases.ACK, "budi", "command line"), RULES)
    with pytest.raises(CaseRefused, match=f"{second} changed since version 1 \\(now 2\\)"):
        act(engine, [second], Action(cases.NOTE, "budi", "workbook", note="x", version=1),
            RULES)
    assert _by_key(engine)[("MISSING_IN_RECORDS", "G1")].state == cases.OPEN
    assert _events(engine) == 3


@pytest.mark.postgres
def test_postgres_refuses_to_change_or_delete_an_event(postgres_server_url: str) -> None:
    from sqlalchemy import delete
    from sqlalchemy.exc import DBAPIError

    from tests.conftest import reset_postgres

    reset_postgres(postgres_server_url)
    engine = make_engine(postgres_server_url)
    init_db(engine)
    run_date(engine, DAY1, [payment_row("G1", "5.00", "2026-11-27 03:00:00")])
    e = recon_case_events
    for statement in (update(e).values(actor="someone else"), delete(e)):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    assert _events(engine) == 1
    with engine.connect() as conn:
        assert conn.execute(select(recon_cases.c.state)).scalar_one() == cases.OPEN
    engine.dispose()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_random_runs_reruns_and_actions_keep_every_case_and_event(
        tmp_path_factory: pytest.TempPathFactory, drawn: st.DataObject) -> None:
    """Random runs of three dates (in any order, each date any number of times) over a few
    keys, and people's actions between them: no event is ever lost or changed, no problem
    has two cases, IDs are never reused, and each case's state is the fold of its
    events."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('cases') / 'recon.db'}")
    init_db(engine)
    kept: list[tuple[object, ...]] = []
    for _ in range(drawn.draw(st.integers(min_value=1, max_value=6))):
        if drawn.draw(st.booleans()):
            day = drawn.draw(st.sampled_from([DAY1, DAY2, DAY3]))
            keys = drawn.draw(st.sets(st.sampled_from(["G1", "G2", "G3"]), min_size=1))
            run_date(engine, day, [payment_row(key, "5.00", "2026-11-27 03:00:00")
                               for key in sorted(keys)])
        else:
            rows = list_cases(engine, "M001", cases.STATES)
            if not rows:
                continue
            row = drawn.draw(st.sampled_from(rows))
            action = drawn.draw(st.sampled_from(cases.PEOPLE_ACTIONS))
            step = Action(action, drawn.draw(st.sampled_from(["ana", "budi"])), "command line",
                          owner="budi", note="why",
                          resolution=drawn.draw(st.sampled_from(cases.RESOLUTIONS)))
            with contextlib.suppress(CaseRefused):  # a refused action leaves no trace
                act(engine, [row.case_id], step, RULES)
        with engine.connect() as conn:
            events = [tuple(r) for r in conn.execute(
                select(recon_case_events).order_by(recon_case_events.c.event_id))]
            keys = [tuple(r) for r in conn.execute(select(
                recon_cases.c.category, recon_cases.c.kind, recon_cases.c.case_key))]
        assert events[:len(kept)] == kept  # appended to, never changed
        kept = events
        assert len(keys) == len(set(keys))
        _assert_folds(engine)
    ids = [row.case_id for row in list_cases(engine, "M001", cases.STATES)]
    assert sorted(ids) == [f"M001-{n:06d}" for n in range(1, len(ids) + 1)]
    engine.dispose()
