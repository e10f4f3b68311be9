"""The operator's trading state in Redis, and the watcher every worker runs to obey it.

The state is one JSON record under TRADING_STATE_KEY with a version that grows with every change
(control.py writes it, compare-and-set). Each worker polls it every third of a lease period, so a
change reaches every replica of every role within one lease period, and a restarted worker (even
after kill -9) reads it before it handles anything. A worker records the version it has seen in
TRADING_STATE_SEEN_KEY, which `tradebot status` shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.lifecycle import wait_or_stop
from tradebot.common.streams import TRADING_STATE_KEY, TRADING_STATE_SEEN_KEY
from tradebot.risk.state import TradingState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorRecord:
    """The operator's last word: state, version, and the audit fields of the change."""

    state: TradingState = TradingState.ACTIVE
    version: int = 0
    action: str = "initial"
    actor: str = "-"
    reason: str = "never changed"
    at: str = ""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "state": self.state.value}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | None) -> OperatorRecord:
        if not raw:
            return cls()
        saved = json.loads(raw)
        return cls(**{**saved, "state": TradingState(saved["state"])})


async def read_record(redis: aioredis.Redis) -> tuple[OperatorRecord, str]:
    """The current record and its raw value (the compare-and-set guard; '' when never set)."""
    raw = await redis.get(TRADING_STATE_KEY)
    return OperatorRecord.from_json(raw), raw or ""


async def seen_versions(redis: aioredis.Redis) -> dict[str, int]:
    """Which worker last saw which version."""
    return {member: int(version) for member, version in (await redis.hgetall(TRADING_STATE_SEEN_KEY)).items()}


class TradingStateWatcher:
    """Keeps ``current`` within a poll interval of the record in Redis."""

    def __init__(self, redis: aioredis.Redis, member: str, role: str, interval_s: float):
        self.redis = redis
        self.member = f"{role}:{member}"
        self.interval_s = interval_s
        self.current = OperatorRecord()
        self._recorded = -1  # the version last written to the seen-by list

    async def refresh(self) -> OperatorRecord:
        """Read the record now; a new version is logged and recorded as seen."""
        record, _ = await read_record(self.redis)
        if record.version != self.current.version:
            log.warning(
                "trading state is now %s (v%d, %s by %s: %s)",
                record.state,
                record.version,
                record.action,
                record.actor,
                record.reason,
            )
        self.current = record
        if record.version != self._recorded:
            await self.redis.hset(TRADING_STATE_SEEN_KEY, self.member, record.version)
            self._recorded = record.version
        return record

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until stopped; Redis outages keep the last known state (the worker cannot act anyway)."""
        while not await wait_or_stop(stop, self.interval_s):
            try:
                await self.refresh()
            except RECOVERABLE_REDIS_ERRORS as error:
                log.debug("trading state not refreshed: %s", error)

    async def forget(self) -> None:
        """Leave the seen-by list on a clean stop."""
        try:
            await self.redis.hdel(TRADING_STATE_SEEN_KEY, self.member)
        except RECOVERABLE_REDIS_ERRORS:
            pass


def poll_interval(lease_ttl_ms: int) -> float:
    """A third of a lease period: a change is seen well within one."""
    return lease_ttl_ms / 3000


@asynccontextmanager
async def obeying_trading_state(
    redis: aioredis.Redis,
    member: str,
    role: str,
    lease_ttl_ms: int,
    stop: asyncio.Event,
    *beside: Coroutine[Any, Any, None],
) -> AsyncIterator[TradingStateWatcher]:
    """A worker's watcher: read before its first event (also after a kill -9), then kept fresh until
    the block ends, with the ``beside`` tasks running alongside; it leaves the seen-by list at the end."""
    watcher = TradingStateWatcher(redis, member, role, poll_interval(lease_ttl_ms))
    try:
        await watcher.refresh()
    except BaseException:
        for coroutine in beside:
            coroutine.close()
        raise
    background = [asyncio.create_task(watcher.run(stop)), *(asyncio.create_task(c) for c in beside)]
    try:
        yield watcher
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await watcher.forget()
