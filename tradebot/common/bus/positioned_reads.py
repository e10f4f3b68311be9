"""Reads by position instead of pending entries: a positioned reader's fenced XREAD (it keeps its
place in its commit), replays between ids, followers' fan-out XREAD, and XRANGE for tools."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tradebot.common.bus.base import BusBase
from tradebot.common.bus.connection import by_slot, is_cluster
from tradebot.common.bus.dead_letters import tick_dead_letter
from tradebot.common.bus.wire import Delivery, RawEntry, decode_all, decode_entry, entry_fields
from tradebot.common.lifecycle import first_of
from tradebot.common.models import Event


class PositionedReads(BusBase):
    """Read streams from positions: positioned readers, replays, followers and tools."""

    async def read_positioned(
        self, positions: Mapping[str, str], lease: tuple[str, str], *, count: int
    ) -> tuple[list[Delivery], list[tuple[RawEntry, str]], dict[str, str]] | None:
        """Up to ``count`` entries per stream after ``positions`` (stream → id), with XREAD, only
        while ``lease`` is held (None once it is not); the streams share the lease's slot.

        For a reader that owns its streams and keeps its place in its commit (the group moved with
        XGROUP SETID, see :class:`Commit`): nothing is pending, so Redis writes no XCLAIM per entry
        and group to its append-only file. Returns the decoded deliveries, the entries that fail
        validation with the reason (for the commit's dead-letter records: written here, a crash
        before the commit would write them twice) and where each stream's read ended.
        """
        entries = await self.read_positioned_entries(positions, lease, count=count)
        if entries is None:
            return None
        deliveries: list[Delivery] = []
        rejected: list[tuple[RawEntry, str]] = []
        ended: dict[str, str] = {}
        for entry in entries:
            stream, entry_id = entry.stream, entry.entry_id
            ended[stream] = entry_id
            try:
                events, indexes, invalid = decode_entry(entry.fields or {})
            except ValueError as error:
                rejected.append((entry, str(error)))
                continue
            deliveries += [Delivery(stream, entry_id, *pair) for pair in zip(events, indexes, strict=True)]
            rejected += [(tick_dead_letter(entry, index), reason) for index, reason in invalid]
        return deliveries, rejected, ended

    async def read_positioned_entries(
        self, positions: Mapping[str, str], lease: tuple[str, str], *, count: int
    ) -> list[RawEntry] | None:
        """:meth:`read_positioned`'s entries as stored, not decoded (for a reader that decodes only
        what it needs: storage turns tick batches into column values, never Tick objects)."""
        keys = [lease[0], *positions]
        reply = await self._positioned_read(keys=keys, args=[lease[1], count, *positions.values()])
        if reply == 0:
            return None
        return [RawEntry(stream, entry_id, entry_fields(raw) or {}) for stream, rows in reply for entry_id, raw in rows]

    async def entries_between(
        self, stream: str, after: str, until: str, *, count: int
    ) -> tuple[list[Delivery], str | None]:
        """Up to ``count`` entries of ``stream`` after ``after`` up to ``until`` (both ids), decoded,
        and the id of the last one read (None: none left). An entry that fails validation is left
        out, and so is an invalid tick of a batch entry (its reader dead-lettered them when it read them):
        what a positioned reader replays on top of a snapshot."""
        rows = await self.redis.xrange(stream, min=f"({after}", max=until, count=count)
        deliveries: list[Delivery] = []
        for entry_id, raw in rows:
            try:
                events, indexes, _ = decode_entry(entry_fields(raw) or {})
            except ValueError:
                continue
            deliveries += [Delivery(stream, entry_id, *pair) for pair in zip(events, indexes, strict=True)]
        return deliveries, rows[-1][0] if rows else None

    async def take_positions(self, streams: Sequence[str], group: str, lease: tuple[str, str]) -> dict[str, str]:
        """Where a positioned reader of ``streams`` starts: its group's position, after taking over
        the entries a reader of an older release left pending (see TAKE_OVER_PENDING_SCRIPT)."""
        positions = {}
        for stream in streams:
            before = await self._take_over_pending(keys=[stream, lease[0]], args=[group, lease[1]])
            positions[stream] = before or await self.last_delivered_id(stream, group)
        return positions

    async def wait_for_entries(self, positions: Mapping[str, str], block_ms: int, stop: asyncio.Event) -> None:
        """Block until a stream has an entry newer than its position, ``block_ms`` passes, or ``stop``.

        On a cluster one XREAD per slot waits, and the first to see news ends the wait.
        """
        groups = by_slot(positions) if is_cluster(self.redis) else [list(positions)]
        waiting = [
            asyncio.create_task(self.redis.xread({s: positions[s] for s in group}, count=1, block=block_ms))
            for group in groups
        ]
        try:
            await first_of(stop, *waiting)
        finally:  # (also when the reader itself is cancelled: no read is left behind)
            for task in waiting:
                if not task.done():
                    task.cancel()  # redis-py drops the connection of a cancelled command: nothing half-read
            await asyncio.gather(*waiting, return_exceptions=True)

    async def tails(self, streams: Sequence[str]) -> dict[str, str]:
        """The id of each stream's newest entry ("0-0" for an empty or missing stream): where a
        follower starts to see only what comes next."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrevrange(stream, count=1)
            replies = await pipe.execute()
        return {stream: rows[0][0] if rows else "0-0" for stream, rows in zip(streams, replies, strict=True)}

    async def follow(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, str, Event | None]]:
        """Entries after ``positions`` (stream → last seen id, ``$`` for "from now"), with plain XREAD:
        a fan-out read that joins no group, so a watcher never holds back or takes work from a worker.
        An entry that fails validation comes back as None (a watcher only looks; dead-lettering is
        the consumers' job)."""
        followed: list[tuple[str, str, Event | None]] = []
        for stream, entry_id, fields in await self.follow_fields(positions, count=count, block_ms=block_ms):
            try:
                events, _, invalid = decode_entry(fields)
            except ValueError:
                events, invalid = [], [(0, "")]
            followed += [(stream, entry_id, event) for event in events]
            followed += [(stream, entry_id, None) for _ in invalid]
        return followed

    async def follow_fields(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, str, dict[str, str]]]:
        """As :meth:`follow`, with each entry's fields as stored (for a reader that decodes only
        what it needs, e.g. the live fan-out, which passes a tick's JSON on as it is)."""
        slots = by_slot(positions) if is_cluster(self.redis) else [list(positions)]
        reply: list[Any] = []
        for slot in slots:  # on a cluster one XREAD per slot, the last one waiting for news
            block = block_ms if slot is slots[-1] and not reply else None
            reply += await self.redis.xread({s: positions[s] for s in slot}, count=count, block=block) or []
        return [(stream, entry_id, fields) for stream, rows in reply for entry_id, fields in rows]

    async def entries(self, stream: str) -> list[Event]:
        """Every event on a stream, oldest first (replays and tools read results back with this)."""
        return [event for _, fields in await self.redis.xrange(stream) for event in decode_all(fields)]

    async def entries_of(self, streams: Iterable[str]) -> list[Event]:
        """Every event on ``streams`` (say, every partition's signals), stream after stream."""
        return [event for stream in streams for event in await self.entries(stream)]
