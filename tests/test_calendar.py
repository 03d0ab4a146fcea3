import datetime as dt

import pytest

from recon.core.calendar import WIB, WorkingCalendar, wib_date

D = dt.date
CAL = WorkingCalendar()


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (D(2026, 11, 27), True),  # Friday
        (D(2026, 11, 28), False),  # Saturday
        (D(2026, 11, 29), False),  # Sunday
        (D(2026, 11, 30), True),  # Monday
        (D(2026, 12, 24), False),  # cuti bersama (government category)
        (D(2026, 12, 25), False),  # Christmas
        (D(2026, 12, 28), True),
        (D(2026, 3, 17), True),
        (D(2026, 3, 18), False),  # Nyepi joint leave
        (D(2026, 3, 19), False),  # Nyepi
        (D(2026, 3, 20), False),  # Idul Fitri joint leave
        (D(2026, 3, 23), False),
        (D(2026, 3, 24), False),
        (D(2026, 3, 25), True),
        (D(2026, 8, 17), False),  # Independence Day (Monday)
    ],
)
def test_working_days(day: dt.date, working: bool) -> None:
    assert CAL.is_working_day(day) is working


@pytest.mark.parametrize(
    ("settlement", "covered"),
    [
        # The SPEC's three examples.
        (D(2026, 11, 30), [D(2026, 11, 27), D(2026, 11, 28), D(2026, 11, 29)]),
        (D(2026, 12, 28), [D(2026, 12, d) for d in range(23, 28)]),
        (D(2026, 3, 25), [D(2026, 3, d) for d in range(17, 25)]),
        # An ordinary weekday covers the day before only.
        (D(2026, 12, 1), [D(2026, 11, 30)]),
    ],
)
def test_covered_dates(settlement: dt.date, covered: list[dt.date]) -> None:
    assert CAL.covered_dates(settlement) == covered
    for day in covered:
        assert CAL.next_working_day(day) == settlement


def test_covered_dates_refuses_a_day_off() -> None:
    with pytest.raises(ValueError, match="not a working day"):
        CAL.covered_dates(D(2026, 11, 28))


def test_extra_holidays_and_working_days() -> None:
    cal = WorkingCalendar(extra_holidays=[D(2026, 12, 1)], extra_working_days=[D(2026, 11, 28)])
    assert not cal.is_working_day(D(2026, 12, 1))
    assert cal.holiday_name(D(2026, 12, 1)) == "configured holiday"
    assert cal.is_working_day(D(2026, 11, 28))  # a decreed working Saturday
    assert cal.covered_dates(D(2026, 11, 30)) == [D(2026, 11, 28), D(2026, 11, 29)]
    assert cal.covered_dates(D(2026, 12, 2)) == [D(2026, 11, 30), D(2026, 12, 1)]


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (dt.datetime(2026, 11, 29, 23, 59, 59, tzinfo=WIB), D(2026, 11, 29)),
        (dt.datetime(2026, 11, 30, 0, 0, 0, tzinfo=WIB), D(2026, 11, 30)),
        (dt.datetime(2026, 11, 29, 16, 59, 59, tzinfo=dt.UTC), D(2026, 11, 29)),
        (dt.datetime(2026, 11, 29, 17, 0, 0, tzinfo=dt.UTC), D(2026, 11, 30)),
        (dt.datetime(2026, 11, 29, 23, 30), D(2026, 11, 29)),  # naive is WIB
    ],
)
def test_midnight_wib(moment: dt.datetime, day: dt.date) -> None:
    assert wib_date(moment) == day


def test_working_days_between() -> None:
    assert CAL.working_days_between(D(2026, 11, 30), D(2026, 11, 30)) == 0
    assert CAL.working_days_between(D(2026, 11, 27), D(2026, 11, 30)) == 1
    assert CAL.working_days_between(D(2026, 12, 22), D(2026, 12, 28)) == 2  # 23 and 28
