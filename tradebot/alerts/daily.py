"""The daily summary: once per NYSE session, ALERT_DAILY_SUMMARY_AFTER_CLOSE_MINUTES after its close
(the risk calendar's sessions: holidays and early closes included), one message to every channel:

    daily summary 2026-03-02: P&L -$3.21 · equity $99,996.79 · 12 fills, 2 denied, 0 rejected ·
    positions AAPL 10, MSFT -5 · 1 data gap · workers: strategy down 1×, 3 processes started

Once per session however many alerts replicas run and however often they restart: a replica claims
the session's key in Redis (SET NX with a lease) before sending and marks it sent after. A replica
killed -9 while sending leaves the lease to expire, and the next one sends it; only a kill between
the channel taking the message and the mark can repeat it. A replica that fails before sending
(the database down, a table missing) gives its claim back and tries again with a growing delay.
A summary missed while no alerts worker ran is sent when one is back, up to a day after the close.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import redis.asyncio as aioredis

from tradebot.common import rounding
from tradebot.common.streams import daily_summary_key, incidents_key, started_workers_key
from tradebot.execution import portfolio as views
from tradebot.risk.calendar import NEW_YORK, NewYorkDay
from tradebot.risk.views import read_checkpoint

log = logging.getLogger(__name__)
LEASE_S = 120  # how long a claim holds while the summary is sent
SENT_KEPT_S = 7 * 86400
LATE_BY_AT_MOST_S = 86400
LOOK_BACK_DAYS = 5  # a long weekend and a holiday

_COUNTS_SQL = """
SELECT (SELECT count(*) FROM fills WHERE status = 'filled' AND ts >= $1 AND ts < $2) AS fills,
       (SELECT count(*) FROM fills WHERE status = 'denied' AND ts >= $1 AND ts < $2) AS denied,
       (SELECT count(*) FROM fills WHERE status = 'rejected' AND ts >= $1 AND ts < $2) AS rejected,
       (SELECT count(*) FROM gaps WHERE first_ts >= $1 AND first_ts < $2) AS gaps"""


class SessionHours(Protocol):
    """The calendar (risk.calendar.NyseHours): a day's session as (open, close) epoch seconds."""

    def session_hours(self, day: date) -> tuple[float, float] | None: ...


def session_due(now: datetime, hours: SessionHours, after_close_s: float) -> date | None:
    """The latest session whose summary time has passed, unless that was more than a day ago."""
    today = now.astimezone(NEW_YORK).date()
    for back in range(LOOK_BACK_DAYS):
        day = today - timedelta(days=back)
        session = hours.session_hours(day)
        if session is None:
            continue
        due = session[1] + after_close_s
        if due <= now.timestamp():
            return day if now.timestamp() - due < LATE_BY_AT_MOST_S else None
    return None


@dataclass(frozen=True)
class DailySummary:
    """What a day of trading came to."""

    session: date
    account: dict[str, Any] | None  # the portfolio view; None before the first order
    positions: list[tuple[str, float]]
    counts: dict[str, int]  # fills, denied, rejected, gaps
    incidents: dict[str, int]  # role -> worker-down incidents; started:<role> -> processes started

    def text(self) -> str:
        """The message sent."""
        parts = [f"daily summary {self.session.isoformat()}:"]
        if self.account is None:
            parts.append("no order executed yet")
        else:
            parts.append(f"P&L {_dollars(self.account['daily_pnl'])} · equity {_dollars(self.account['equity'])} ·")
        c = self.counts
        parts.append(f"{c['fills']} fills, {c['denied']} denied, {c['rejected']} rejected ·")
        held = ", ".join(f"{symbol} {quantity:g}" for symbol, quantity in self.positions)
        parts.append(f"positions {held or 'none'} · {c['gaps']} data gap{'s' if c['gaps'] != 1 else ''} ·")
        parts.append(f"workers: {_incidents(self.incidents)}")
        return " ".join(parts)


def _dollars(amount: float) -> str:
    amount = rounding.money(amount) or 0.0
    return f"-${-amount:,.2f}" if amount < 0 else f"${amount:,.2f}"


def _incidents(incidents: dict[str, int]) -> str:
    down = [f"{role} down {n}×" for role, n in sorted(incidents.items()) if not role.startswith("started:")]
    started = sum(n for key, n in incidents.items() if key.startswith("started:"))
    return ", ".join([*down, f"{started} processes started"]) if down else f"none down, {started} processes started"


async def gather(redis: aioredis.Redis, database_url: str, session: date) -> DailySummary:
    """The figures of ``session``'s New York day, from the account checkpoint, the database and Redis."""
    day = NewYorkDay.of(datetime.combine(session, datetime.min.time(), NEW_YORK))
    start, end = (datetime.fromtimestamp(t, NEW_YORK) for t in (day.start, day.end))
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        row = await conn.fetchrow(_COUNTS_SQL, start, end)
    finally:
        await conn.close()
    checkpoint = await read_checkpoint(redis)
    account = views.portfolio(checkpoint) if checkpoint else None
    positions = [(p["symbol"], p["quantity"]) for p in views.positions(checkpoint)] if checkpoint else []
    incidents = {key: int(n) for key, n in (await redis.hgetall(incidents_key(session.isoformat()))).items()}
    return DailySummary(session, account, positions, dict(row or {}), incidents)


async def claim(redis: aioredis.Redis, session: date, owner: str) -> bool:
    """True when this replica is the one to send ``session``'s summary now."""
    return bool(await redis.set(daily_summary_key(session.isoformat()), f"sending:{owner}", nx=True, ex=LEASE_S))


_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def release(redis: aioredis.Redis, session: date, owner: str) -> None:
    """Nothing was sent: give the claim back (if still ours) for the next try."""
    await redis.eval(_RELEASE, 1, daily_summary_key(session.isoformat()), f"sending:{owner}")


async def mark_sent(redis: aioredis.Redis, session: date) -> None:
    """The summary went out: no replica sends it again."""
    await redis.set(daily_summary_key(session.isoformat()), "sent", ex=SENT_KEPT_S)


async def record_worker_down(redis: aioredis.Redis, day: str, role: str, incident_key: str) -> None:
    """Count one worker-down incident of ``role`` today, once whichever replica sees it first."""
    if await redis.set(incident_key, day, nx=True, ex=LATE_BY_AT_MOST_S):  # a day-long outage counts daily
        await redis.hincrby(incidents_key(day), role, 1)
        await redis.expire(incidents_key(day), SENT_KEPT_S)


async def record_started(redis: aioredis.Redis, day: str, role: str, consumer: str) -> None:
    """Count a worker process started today (its heartbeat's first sight), once per process."""
    if await redis.sadd(started_workers_key(day), f"{role}/{consumer}"):
        await redis.hincrby(incidents_key(day), f"started:{role}", 1)
        await redis.expire(incidents_key(day), SENT_KEPT_S)
        await redis.expire(started_workers_key(day), SENT_KEPT_S)
