"""Indonesian working days and which transaction dates a settlement date covers.

A working day is Monday–Friday that is neither a public holiday nor a government
collective-leave day (cuti bersama), per the `holidays` package (country ID, categories
public and government), with configured extra holidays and extra working days on top.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

WIB = ZoneInfo("Asia/Jakarta")


@lru_cache(maxsize=64)
def _official_days_off(year: int) -> dict[dt.date, str]:
    days = holidays.country_holidays("ID", years=year, categories=("public", "government"))
    return dict(days.items())


class WorkingCalendar:
    """Working-day arithmetic for one configuration of extra holidays and working days."""

    def __init__(
        self,
        extra_holidays: Iterable[dt.date] = (),
        extra_working_days: Iterable[dt.date] = (),
    ) -> None:
        self.extra_holidays = frozenset(extra_holidays)
        self.extra_working_days = frozenset(extra_working_days)

    def holiday_name(self, day: dt.date) -> str | None:
        """The reason `day` is not a working day, or None when it is one."""
        if day in self.extra_working_days:
            return None
        if day in self.extra_holidays:
            return "configured holiday"
        name = _official_days_off(day.year).get(day)
        if name:
            return name
        if day.weekday() >= 5:
            return "weekend"
        return None

    def is_working_day(self, day: dt.date) -> bool:
        return self.holiday_name(day) is None

    def next_working_day(self, day: dt.date) -> dt.date:
        """The first working day strictly after `day`."""
        candidate = day + dt.timedelta(days=1)
        while not self.is_working_day(candidate):
            candidate += dt.timedelta(days=1)
        return candidate

    def previous_working_day(self, day: dt.date) -> dt.date:
        """The last working day strictly before `day`."""
        candidate = day - dt.timedelta(days=1)
        while not self.is_working_day(candidate):
            candidate -= dt.timedelta(days=1)
        return candidate

    def covered_dates(self, settlement_date: dt.date) -> list[dt.date]:
        """Transaction dates D with next_working_day(D) == settlement_date, oldest first.

        That is every date from the previous working day up to the day before.
        """
        if not self.is_working_day(settlement_date):
            raise ValueError(f"{settlement_date} is not a working day")
        first = self.previous_working_day(settlement_date)
        return [
            first + dt.timedelta(days=offset)
            for offset in range((settlement_date - first).days)
        ]

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Number of working days d with start < d <= end (0 when end <= start)."""
        count = 0
        day = start
        while day < end:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                count += 1
        return count

    def add_working_days(self, start: dt.date, days: int) -> dt.date:
        """The date `days` working days after `start` (`start` itself for 0)."""
        day = start
        for _ in range(days):
            day = self.next_working_day(day)
        return day

    def working_days(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """Working days from start to end inclusive."""
        days = []
        day = start
        while day <= end:
            if self.is_working_day(day):
                days.append(day)
            day += dt.timedelta(days=1)
        return days


def wib_date(moment: dt.datetime) -> dt.date:
    """The business (WIB) date of a time; a naive time is taken as WIB."""
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(WIB).date()


def today_wib(now: dt.datetime | None = None) -> dt.date:
    moment = now or dt.datetime.now(dt.UTC)
    return wib_date(moment)
