"""Retention follows the consumers: nothing trims by length. :meth:`Retention.trim_consumed`
removes only entries every group of a stream is done with, and memory is bounded by a budget
(:meth:`Retention.wait_for_room`) that producers respect."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from tradebot.common.bus.base import BusBase
from tradebot.common.bus.connection import is_cluster
from tradebot.common.streams import hold_key

log = logging.getLogger(__name__)

ROOM_CHECK_S = 0.5  # how often a producer waiting for memory looks again
ROOM_LOG_EVERY_S = 60.0  # a producer hovering at the budget says so once a minute, not per batch


class Retention(BusBase):
    """Trim what every group is done with, and keep producers within the memory budget."""

    async def trim_consumed(self, stream: str, readers: Sequence[str] = ()) -> int:
        """Trim ``stream`` below the oldest entry any of its groups still needs; returns entries removed.

        Nothing is trimmed while one of ``readers`` (the groups that must read it) is missing, or
        when the stream has no group at all: nobody has said what it still needs. What a group's
        snapshot still needs (its hold, see :func:`hold_key`) is kept too.
        """
        hold = hold_key(stream)
        removed = int(await self._trim(keys=[stream, *([hold] if hold else [])], args=list(readers)))
        if removed > 0:
            self.stats["trimmed"] += removed
        return max(0, removed)

    async def remove_idle_consumers(self, stream: str, group: str, *, idle_ms: int, keep: str) -> int:
        """Delete consumers of ``group`` that hold no pending entries and were idle for ``idle_ms``.

        A consumer holding entries is never deleted (that would drop its entries from the PEL);
        reclaiming moves them to a live consumer first. Returns how many were removed.
        """
        try:
            consumers = await self.redis.xinfo_consumers(stream, group)
        except ResponseError:  # no such stream or group yet
            return 0
        removed = 0
        for consumer in consumers:
            if consumer["name"] != keep and int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                await self.redis.xgroup_delconsumer(stream, group, consumer["name"])
                removed += 1
        return removed

    async def memory_used(self) -> int:
        """Bytes Redis has allocated (INFO memory used_memory; on a cluster, of its fullest master)."""
        if is_cluster(self.redis):  # the budget holds per master: the fullest one counts
            per_node = await self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
            return max(int(info["used_memory"]) for info in per_node.values())
        return int((await self.redis.info("memory"))["used_memory"])

    async def has_room(self) -> bool:
        """True when Redis is within the memory budget (always, without a budget)."""
        return self.memory_budget_bytes is None or await self.memory_used() <= self.memory_budget_bytes

    async def wait_for_room(self, retained: Mapping[str, Sequence[str]], stop: asyncio.Event, who: str) -> bool:
        """Wait while Redis is over its memory budget, trimming what consumers finished meanwhile.

        ``retained`` maps each stream to the groups that must read it. Logs once when it starts
        waiting and once when it goes on; returns True when there is room, False if stopped first.
        """
        started, logged = None, False
        while True:
            if await self.has_room():
                break
            for stream, readers in retained.items():
                await self.trim_consumed(stream, readers)
            if await self.has_room():
                break
            if started is None:
                started = time.monotonic()
                self.stats["waits_for_room"] += 1
            if not logged and time.monotonic() >= self._next_room_log:
                logged = True
                self._next_room_log = time.monotonic() + ROOM_LOG_EVERY_S
                log.warning(
                    "%s waits: Redis uses %.1f MB, over REDIS_MEMORY_BUDGET_MB=%.1f; consumers are behind "
                    "(see /health), and entries are kept until every group has them",
                    who,
                    await self.memory_used() / 2**20,
                    (self.memory_budget_bytes or 0) / 2**20,
                )
            try:
                await asyncio.wait_for(stop.wait(), timeout=ROOM_CHECK_S)
                return False
            except TimeoutError:
                continue
        if logged and started is not None:
            log.info("%s goes on: Redis is back within its memory budget after %.1fs", who, time.monotonic() - started)
        return True
