"""The one package that speaks Redis Streams and knows the wire format.

An entry is ``{"v": schema version, "type": event class name, "data": event JSON}``; ticks go
several to an entry (``{"v": "2", "type": "Ticks", "data": rows}``, see
:func:`~tradebot.common.bus.wire.encode_entries`), and every reader takes an entry's events with
:func:`~tradebot.common.bus.wire.decode_entry`. Delivery is at-least-once: readers ack after their
effect, and :meth:`Bus.commit` publishes, writes state and acks in one atomic script so a crash can
never split them.

Retention follows the consumers: nothing here trims by length. :meth:`Bus.trim_consumed` removes
only entries every group of a stream is done with, and memory is bounded by a budget
(:meth:`Bus.wait_for_room`) that producers respect. Errors that mean "Redis cannot take this
right now" (OOM, MISCONF, READONLY, BUSY, LOADING, timeouts) arrive as
:class:`~tradebot.common.bus.connection.RedisRefusedError`, a recoverable error every retry loop
rides out, never as a failure of the entry at hand.

The modules, one concern each: ``wire`` (entries and their ids), ``connection`` (the client, its
errors, cluster slots), ``scripts`` (the Lua run inside Redis), and the parts of :class:`Bus` —
``base`` (what they share), ``publishing`` (publish, commit, ack), ``group_reads`` (consumer
groups), ``positioned_reads`` (reads by position, followers), ``dead_letters``, ``retention``
(trimming, the memory budget) and ``health`` (length, pending, lag).
"""

from __future__ import annotations

from tradebot.common.bus.connection import SOCKET_TIMEOUT_S, connect
from tradebot.common.bus.group_reads import GroupReads
from tradebot.common.bus.health import Health
from tradebot.common.bus.positioned_reads import PositionedReads
from tradebot.common.bus.publishing import Publishing
from tradebot.common.bus.retention import Retention
from tradebot.common.config import ReadySettings


class Bus(Publishing, GroupReads, PositionedReads, Retention, Health):
    """Publish, consume, ack, reclaim and dead-letter events on Redis Streams."""

    @classmethod
    def from_settings(cls, settings: ReadySettings) -> Bus:
        """The bus every worker uses: REDIS_URL, REDIS_MEMORY_BUDGET_MB, MAX_DELIVERIES, BUS_BLOCK_MS,
        BUS_TICKS_PER_ENTRY."""
        timeout_s = max(SOCKET_TIMEOUT_S, settings.bus_block_ms / 1000 + 10)
        client = connect(settings.redis_url, cluster=settings.redis_cluster, socket_timeout_s=timeout_s)
        return cls(
            client,
            max_deliveries=settings.max_deliveries,
            memory_budget_bytes=int(settings.redis_memory_budget_mb * 1024 * 1024),
            min_replicas=settings.redis_min_replicas,
            ticks_per_entry=settings.bus_ticks_per_entry,
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()
