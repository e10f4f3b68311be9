"""A one-line summary of what the bot is doing, logged by ``tradebot up`` every SUMMARY_INTERVAL_S:

    activity: 498 ticks/s · 212 signals · 205 fills, 7 rejected · P&L -$3.21 (realised -$1.00) · equity $99,996.79

Ticks per second come from the feeds' heartbeat counters and times (no extra work for any worker); signals
and fills are what storage has written; P&L and equity are the paper account's last commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from tradebot.common import rounding
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, connect, get_many
from tradebot.common.config import Settings
from tradebot.common.db import TRANSIENT_DB_ERRORS
from tradebot.common.streams import HEARTBEAT_PATTERN
from tradebot.execution.account import read_account

log = logging.getLogger("tradebot.activity")

# Which heartbeat counter counts the ticks a feed published.
FEED_TICK_COUNTERS = {"market_data": "published", "alpaca": "ticks", "polygon": "ticks"}
_COUNTS_SQL = """
SELECT (SELECT count(*) FROM signals) AS signals,
       (SELECT count(*) FROM fills WHERE status = 'filled') AS fills,
       (SELECT count(*) FROM fills WHERE status = 'rejected') AS rejected"""


@dataclass(frozen=True)
class FeedCount:
    """Ticks a feed process had published when it last wrote its heartbeat."""

    ticks: int
    at: float  # the heartbeat's updated_at, epoch seconds


@dataclass(frozen=True)
class Snapshot:
    """Totals at one moment."""

    feeds: dict[str, FeedCount]  # by heartbeat key
    signals: int
    fills: int
    rejected: int
    account: dict[str, Any] | None
    rates: dict[str, float] = field(default_factory=dict)  # ticks/s per feed, filled in by with_rates


async def feed_ticks(client: aioredis.Redis) -> dict[str, FeedCount]:
    """Ticks published so far by each live feed process (from its heartbeat)."""
    keys = [key async for key in client.scan_iter(match=HEARTBEAT_PATTERN, count=500)]
    feeds = {}
    for key, raw in zip(keys, await get_many(client, keys), strict=True):
        try:
            beat = json.loads(raw) if raw else {}
            counter = FEED_TICK_COUNTERS.get(beat.get("role", ""))
            if counter:
                at = datetime.fromisoformat(beat["updated_at"]).timestamp()
                feeds[key] = FeedCount(int(beat.get("counters", {}).get(counter, 0)), at)
        except (ValueError, KeyError, TypeError):
            continue
    return feeds


async def snapshot(client: aioredis.Redis, database_url: str) -> Snapshot:
    """Totals now."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        counts = await conn.fetchrow(_COUNTS_SQL)
    finally:
        await conn.close()
    assert counts is not None
    return Snapshot(
        await feed_ticks(client), counts["signals"], counts["fills"], counts["rejected"], await read_account(client)
    )


def with_rates(before: Snapshot | None, now: Snapshot) -> Snapshot:
    """``now`` with each feed's rate between its last two heartbeats. Heartbeats come every few
    seconds, not at every summary: a feed with no new beat keeps its previous rate, and one that
    restarted (its count went down) or is new waits for its next beat."""
    rates = {}
    for key, count in now.feeds.items():
        earlier = before.feeds.get(key) if before else None
        if earlier is None or count.ticks < earlier.ticks:
            continue
        if count.at > earlier.at:
            rates[key] = (count.ticks - earlier.ticks) / (count.at - earlier.at)
        elif before is not None and key in before.rates:
            rates[key] = before.rates[key]
    return replace(now, rates=rates)


def ticks_per_second(now: Snapshot) -> float:
    """Ticks per second over every feed."""
    return sum(now.rates.values())


def summary_line(now: Snapshot) -> str:
    """The line a person reads in the log."""
    parts = [
        f"{ticks_per_second(now):,.0f} ticks/s",
        f"{now.signals:,} signals",
        f"{now.fills:,} fills, {now.rejected:,} rejected",
    ]
    if now.account is None:
        parts.append("no order executed yet")
    else:
        account = now.account
        pnl = rounding.money(account["realised_pnl"] + account["unrealised_pnl"]) or 0.0
        realised = rounding.money(account["realised_pnl"]) or 0.0
        parts.append(f"P&L {_dollars(pnl)} (realised {_dollars(realised)})")
        parts.append(f"equity {_dollars(rounding.money(account['equity']) or 0.0)}")
    return "activity: " + " · ".join(parts)


def _dollars(amount: float) -> str:
    return f"-${-amount:,.2f}" if amount < 0 else f"${amount:,.2f}"


class SummaryLog(threading.Thread):
    """Logs ``summary_line`` every ``interval_s`` beside the supervisor's loop, until ``stop()``."""

    def __init__(self, settings: Settings):
        super().__init__(name="activity-summary", daemon=True)
        self.settings = settings
        self._stopping = threading.Event()

    def run(self) -> None:
        before = self._take()  # a baseline, so the first line already has a rate
        while not self._stopping.wait(self.settings.summary_interval_s):
            taken = self._take()
            if taken is not None:
                now = with_rates(before, taken)
                log.info("%s", summary_line(now))
                before = now

    def _take(self) -> Snapshot | None:
        try:
            return asyncio.run(self._snapshot())
        except (*RECOVERABLE_REDIS_ERRORS, *TRANSIENT_DB_ERRORS, OSError, TimeoutError) as error:
            log.info("activity: summary unavailable (%s)", error)
            return None

    async def _snapshot(self) -> Snapshot:
        assert self.settings.redis_url
        assert self.settings.database_url
        client = connect(self.settings.redis_url, cluster=self.settings.redis_cluster)
        try:
            return await snapshot(client, self.settings.database_url)
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Stop after the current summary (at most one more line)."""
        self._stopping.set()
        self.join(timeout=10)
