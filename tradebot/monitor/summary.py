"""A one-line summary of what the bot is doing, logged by ``tradebot up`` every SUMMARY_INTERVAL_S:

    activity: 498 ticks/s · 212 signals · 205 fills, 7 rejected · P&L -$3.21 (realised -$1.00) · equity $99,996.79

Ticks per second come from the feeds' heartbeat counters (no extra work for any worker); signals
and fills are what storage has written; P&L and equity are the paper account's last commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from tradebot.common import rounding
from tradebot.common.bus import RECOVERABLE_REDIS_ERRORS, connect
from tradebot.common.config import Settings
from tradebot.common.db import TRANSIENT_DB_ERRORS
from tradebot.common.streams import HEARTBEAT_PATTERN
from tradebot.execution.service import read_account

log = logging.getLogger("tradebot.activity")

# Which heartbeat counter counts the ticks a feed published.
FEED_TICK_COUNTERS = {"market_data": "published", "alpaca": "ticks", "polygon": "ticks"}
_COUNTS_SQL = """
SELECT (SELECT count(*) FROM signals) AS signals,
       (SELECT count(*) FROM fills WHERE status = 'filled') AS fills,
       (SELECT count(*) FROM fills WHERE status = 'rejected') AS rejected"""


@dataclass(frozen=True)
class Snapshot:
    """Totals at one moment."""

    at: float  # time.monotonic()
    ticks_by_worker: dict[str, int]
    signals: int
    fills: int
    rejected: int
    account: dict | None


async def feed_ticks(client: aioredis.Redis) -> dict[str, int]:
    """Ticks published so far by each live feed process (from its heartbeat)."""
    keys = [key async for key in client.scan_iter(match=HEARTBEAT_PATTERN, count=500)]
    ticks = {}
    for key, raw in zip(keys, await client.mget(keys) if keys else [], strict=True):
        try:
            beat = json.loads(raw) if raw else {}
        except ValueError:
            continue
        counter = FEED_TICK_COUNTERS.get(beat.get("role", ""))
        if counter:
            ticks[key] = int(beat.get("counters", {}).get(counter, 0))
    return ticks


async def snapshot(client: aioredis.Redis, database_url: str) -> Snapshot:
    """Totals now."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        counts = await conn.fetchrow(_COUNTS_SQL)
    finally:
        await conn.close()
    assert counts is not None
    return Snapshot(
        time.monotonic(),
        await feed_ticks(client),
        counts["signals"],
        counts["fills"],
        counts["rejected"],
        await read_account(client),
    )


def ticks_per_second(before: Snapshot | None, now: Snapshot) -> float:
    """The publishing rate between two snapshots; a restarted feed counts from zero again."""
    if before is None or now.at <= before.at:
        return 0.0
    published = sum(
        count - before.ticks_by_worker.get(key, 0) if count >= before.ticks_by_worker.get(key, 0) else count
        for key, count in now.ticks_by_worker.items()
    )
    return published / (now.at - before.at)


def summary_line(before: Snapshot | None, now: Snapshot) -> str:
    """The line a person reads in the log."""
    parts = [
        f"{ticks_per_second(before, now):,.0f} ticks/s",
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
            now = self._take()
            if now is not None:
                log.info("%s", summary_line(before, now))
                before = now

    def _take(self) -> Snapshot | None:
        try:
            return asyncio.run(self._snapshot())
        except (*RECOVERABLE_REDIS_ERRORS, *TRANSIENT_DB_ERRORS, OSError, TimeoutError) as error:
            log.info("activity: summary unavailable (%s)", error)
            return None

    async def _snapshot(self) -> Snapshot:
        assert self.settings.redis_url and self.settings.database_url
        client = connect(self.settings.redis_url)
        try:
            return await snapshot(client, self.settings.database_url)
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Stop after the current summary (at most one more line)."""
        self._stopping.set()
        self.join(timeout=10)
