"""Market hours from the NYSE calendar (exchange-calendars: sessions, holidays, early closes).

The library is imported only when the market-hours check is on: it pulls in pandas, which costs a
worker start-up second it does not need otherwise. Each session's open and close are looked up
once and cached, so the check per order is two float comparisons.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


def session_of(at: datetime) -> str:
    """The trading day an instant belongs to (New York's date): the daily loss limit resets with it."""
    return at.astimezone(NEW_YORK).date().isoformat()


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
        import exchange_calendars  # noqa: PLC0415 - heavy (pandas); only when the check is on

        self._calendar = exchange_calendars.get_calendar("XNYS")
        self._sessions: dict[date, tuple[float, float] | None] = {}

    def is_open(self, at: datetime) -> bool:
        hours = self.session_hours(at.astimezone(NEW_YORK).date())
        return hours is not None and hours[0] <= at.timestamp() < hours[1]

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
