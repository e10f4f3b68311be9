"""A positioned reader's wait for its next entries that returns them (tick → order latency), one
waiting XREAD for all the readers of a process that wait at once.

A positioned reader (tradebot/common/partitions.py) keeps its place in its group, moved only by
its fenced commit, so reading takes nothing from anyone: the lease check that matters is the
commit's. Its wait for new entries can therefore be the read itself, one blocking XREAD that
returns them, instead of a wait whose reply is dropped and a fenced read of the same entries:
a round trip (and the entry sent twice) less on the path of every live batch. A wait that ends
with nothing (BLOCK elapsed, or stop) returns None, and the reader does a fenced read, which
also tells an idle reader that its lease is gone.

For the same reason the readers of one worker can share that XREAD: the waits begun in one turn
of the event loop (the partitions whose commits just came back together,
tradebot/common/bus/pipelined.py) go out as one XREAD of all their streams, each from its
reader's own position, and each reader takes its streams' share of the reply. A reader with
nothing in it waits on in the next shared read, until its own BLOCK has passed; a reader stopped
leaves the read to the others (the last one out cancels it). A shared read that fails is tried
again alone by each reader in it, so an error is only the reader's whose stream caused it. On a
cluster only readers of one slot share a read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

import redis.asyncio as aioredis
from redis.crc import key_slot

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import is_cluster
from tradebot.common.bus.dead_letters import tick_dead_letter
from tradebot.common.bus.wire import Delivery, RawEntry, decode_entry
from tradebot.common.lifecycle import first_of

PositionedRead = tuple[list[Delivery], list[tuple[RawEntry, str]], dict[str, str]]
Reply = list[tuple[str, list[tuple[str, dict[str, str]]]]]


async def read_when_there(
    bus: Bus, positions: Mapping[str, str], *, count: int, block_ms: int, stop: asyncio.Event
) -> PositionedRead | None:
    """Up to ``count`` entries per stream after ``positions``, waiting up to ``block_ms`` for the
    first; as :meth:`Bus.read_positioned` returns them (the streams share a slot, as there).
    None when nothing came (or ``stop`` was set)."""
    reads = _shared.get(bus.redis) or _shared.setdefault(bus.redis, SharedReads(bus.redis, bus.stats))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + block_ms / 1000
    while not stop.is_set():
        left_ms = int((deadline - loop.time()) * 1000)
        if left_ms <= 0:
            return None
        shared = reads.join(positions, count, left_ms)
        try:
            await first_of(stop, shared.reply)
        finally:  # (also when the reader itself is cancelled)
            reads.leave(shared)
        if not shared.reply.done() or shared.reply.cancelled():
            return None
        if shared.reply.exception() is not None and len(shared.positions) > len(positions):
            reply = await _read_alone(bus.redis, positions, count, left_ms, stop)
        else:
            reply = shared.reply.result()  # (a Redis error is raised here: the reader's to handle)
        mine = [(stream, rows) for stream, rows in reply or [] if stream in positions]
        if mine:
            return _decoded(mine)
    return None


class SharedRead:
    """One XREAD: gathering readers' positions until it is sent, then in flight."""

    def __init__(self, key: tuple[int | None, int], block_ms: int):
        self.key, self.count, self.block_ms = key, key[1], block_ms
        self.positions: dict[str, str] = {}
        self.members = 0
        self.reply: asyncio.Task[Reply | None]


class SharedReads:
    """The shared reads of one Redis client: at most one gathering per slot (and count)."""

    def __init__(self, client: aioredis.Redis, stats: Counter[str]):
        self.client, self.stats = client, stats
        self._gathering: dict[tuple[int | None, int], SharedRead] = {}

    def join(self, positions: Mapping[str, str], count: int, block_ms: int) -> SharedRead:
        """The read to wait on: the one gathering (sent once this turn's readers have joined)."""
        slot = key_slot(next(iter(positions)).encode()) if is_cluster(self.client) else None
        shared = self._gathering.get((slot, count))
        if shared is None or shared.reply.done() or not shared.positions.keys().isdisjoint(positions):
            # (a stream appears once in a read)
            shared = SharedRead((slot, count), block_ms)
            self._gathering[shared.key] = shared
            shared.reply = asyncio.create_task(self._send(shared))
            shared.reply.add_done_callback(_retrieved)
        shared.positions.update(positions)
        shared.block_ms = min(shared.block_ms, block_ms)
        shared.members += 1
        return shared

    def leave(self, shared: SharedRead) -> None:
        shared.members -= 1
        if shared.members == 0 and not shared.reply.done():
            self._stop_gathering(shared)
            shared.reply.cancel()  # redis-py drops the connection of a cancelled command: nothing half-read

    async def _send(self, shared: SharedRead) -> Reply | None:
        self._stop_gathering(shared)
        self.stats["shared_reads"] += 1
        self.stats["shared_read_members"] += shared.members
        reply: Reply | None = await self.client.xread(shared.positions, count=shared.count, block=shared.block_ms)
        return reply

    def _stop_gathering(self, shared: SharedRead) -> None:
        if self._gathering.get(shared.key) is shared:
            del self._gathering[shared.key]


_shared: WeakKeyDictionary[aioredis.Redis, SharedReads] = WeakKeyDictionary()


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A shared read's error is its readers' (each tries alone); none is left unretrieved."""
    if not task.cancelled():
        task.exception()


async def _read_alone(
    client: aioredis.Redis, positions: Mapping[str, str], count: int, block_ms: int, stop: asyncio.Event
) -> Reply | None:
    waiting = asyncio.create_task(client.xread(dict(positions), count=count, block=block_ms))
    try:
        await first_of(stop, waiting)
    finally:  # (also when the reader itself is cancelled: no read is left behind)
        if not waiting.done():
            waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    if waiting.cancelled():
        return None
    reply: Reply | None = waiting.result()
    return reply


def _decoded(reply: Reply) -> PositionedRead | None:
    deliveries: list[Delivery] = []
    rejected: list[tuple[RawEntry, str]] = []
    ended: dict[str, str] = {}
    for stream, rows in reply:
        for entry_id, fields in rows:
            entry = RawEntry(stream, entry_id, dict(fields or {}))
            ended[stream] = entry_id
            try:
                events, indexes, invalid = decode_entry(entry.fields or {})
            except ValueError as error:
                rejected.append((entry, str(error)))
                continue
            deliveries += [Delivery(stream, entry_id, *pair) for pair in zip(events, indexes, strict=True)]
            rejected += [(tick_dead_letter(entry, index), reason) for index, reason in invalid]
    return (deliveries, rejected, ended) if ended else None
