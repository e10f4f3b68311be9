"""Market hours from the NYSE calendar (exchange-calendars: sessions, holidays, early closes).

The library is imported only when the market-hours check is on: it pulls in pandas, which costs a
worker start-up second it does not need otherwise. Each session's open and close are looked up
once and cached, so the check per order is two float comparisons.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


def session_of(at: datetime) -> str:
    """The trading day an instant belongs to (New York's date): the daily loss limit resets with it."""
    return at.astimezone(NEW_YORK).date().isoformat()


@dataclass(frozen=True, slots=True)
class NewYorkDay:
    """One New York calendar day as an epoch-seconds range [start, end), DST included."""

    day: date
    start: float
    end: float

    @classmethod
    def of(cls, at: datetime) -> NewYorkDay:
        day = at.astimezone(NEW_YORK).date()
        start = datetime.combine(day, time(), NEW_YORK).timestamp()
        return cls(day, start, datetime.combine(day + timedelta(days=1), time(), NEW_YORK).timestamp())

    def holds(self, epoch: float) -> bool:
        return self.start <= epoch < self.end


class MarketHours(Protocol):
    """Whether the market is open at an instant."""

    def is_open(self, at: datetime) -> bool: ...


class AlwaysOpen:
    """For MARKET_HOURS=off (the mock demo trades at any hour)."""

    def is_open(self, at: datetime) -> bool:
        return True


class NyseHours:
    """Regular NYSE sessions: 9:30-16:00 New York, none on holidays, 13:00 closes on early-close days."""

    def __init__(self) -> None:
        import exchange_calendars

        self._calendar = exchange_calendars.get_calendar("XNYS")
        self._sessions: dict[date, tuple[float, float] | None] = {}
        self._today: tuple[NewYorkDay, tuple[float, float] | None] | None = None  # the last day asked about

    def is_open(self, at: datetime) -> bool:
        epoch = at.timestamp()
        if self._today is None or not self._today[0].holds(epoch):
            day = NewYorkDay.of(at)
            self._today = day, self.session_hours(day.day)
        hours = self._today[1]
        return hours is not None and hours[0] <= epoch < hours[1]

    def session_hours(self, day: date) -> tuple[float, float] | None:
        """(open, close) as epoch seconds of the session on ``day``, or None when there is none."""
        if day not in self._sessions:
            self._sessions[day] = self._lookup(day)
        return self._sessions[day]

    def _lookup(self, day: date) -> tuple[float, float] | None:
        label = day.isoformat()
        first, last = self._calendar.first_session, self._calendar.last_session
        if not (first.date() <= day <= last.date()) or not self._calendar.is_session(label):
            return None  # outside the calendar's range the market counts as closed: fail safe
        opened, closed = self._calendar.session_open_close(label)
        return opened.timestamp(), closed.timestamp()


@functools.cache
def nyse_hours() -> NyseHours:
    """One calendar per process: loading it takes a second, and a partition may be restored often."""
    return NyseHours()
