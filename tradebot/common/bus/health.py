"""How far behind a group is on its streams: length, pending and lag (what /health shows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tradebot.common.bus.base import BusBase
from tradebot.common.bus.wire import entry_ms

LAG_COUNT_CAP = 1000


@dataclass(frozen=True)
class StreamHealth:
    """Length, pending and lag of one stream for one group (lag = entries not yet delivered)."""

    stream: str
    group: str
    length: int
    pending: int
    lag: int


class Health(BusBase):
    """Length, pending and lag of a stream for a group."""

    async def health(self, stream: str, group: str) -> StreamHealth:
        """Length, pending count and lag of ``stream`` for ``group``.

        The lag is counted here, up to LAG_COUNT_CAP undelivered entries; beyond that it is
        estimated from entry times, so /health stays cheap exactly when the backlog is large.
        The lag Redis 7 reports is not used: 7.0 restores a group's entries-read from the snapshot
        of a rewritten append-only file, and the reads replayed after it do not advance it, so
        after such a restart its lag stays too high by their number forever (6.2 reports none).
        """
        length = await self.redis.xlen(stream)
        groups = {g["name"]: g for g in await self._groups(stream)}
        info = groups.get(group)
        if info is None:
            return StreamHealth(stream, group, length, 0, length)
        lag = await self._counted_lag(stream, info["last-delivered-id"], length)
        return StreamHealth(stream, group, length, int(info["pending"]), lag)

    async def backlog(self, streams: Sequence[str], group: str) -> int:
        """Entries of ``streams`` that ``group`` has not finished: pending plus not yet delivered."""
        total = 0
        for stream in streams:
            health = await self.health(stream, group)
            total += health.pending + health.lag
        return total

    async def _counted_lag(self, stream: str, last_delivered: str, length: int) -> int:
        after = await self.redis.xrange(stream, min=f"({last_delivered}", max="+", count=LAG_COUNT_CAP + 1)
        if len(after) <= LAG_COUNT_CAP:
            return len(after)
        first = await self.redis.xrange(stream, count=1)
        last = await self.redis.xrevrange(stream, count=1)
        first_ms, last_ms = entry_ms(first[0][0]), entry_ms(last[0][0])
        unread_share = (last_ms - entry_ms(last_delivered)) / max(1, last_ms - first_ms)
        return max(len(after), min(length, round(length * unread_share)))
