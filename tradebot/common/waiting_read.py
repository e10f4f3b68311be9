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
tradebot/common/bus/together.py) go out as one XREAD of all their streams, each from its
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

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import is_cluster
from tradebot.common.bus.dead_letters import tick_dead_letter
from tradebot.common.bus.wire import Delivery, RawEntry, decode_entry
from tradebot.common.lifecycle import first_of

PositionedRead = tuple[list[Delivery], list[tuple[RawEntry, str]], dict[str, str]]
Reply = list[tuple[str, list[tuple[str, dict[str, str]]]]]


class SharedRead:
    """One XREAD: gathering readers' positions until it is sent, then in flight."""

    def __init__(self, block_ms: int):
        self.block_ms = block_ms
        self.positions: dict[str, str] = {}
        self.members = 0
        self.reply: asyncio.Task[Reply | None] | None = None  # once sent
        self.back: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # done: reply is


class SharedReads:
    """The waiting reads of a worker's positioned readers, shared (see the module).

    Every reader taking part is a :class:`WaitingReader`. A read gathers the readers that wait and
    is sent once every one of them waits (a reader busy with its batch holds it back: it comes back
    at once after its commit, which goes with the others' in one pipeline), so one read is in
    flight and a feed batch costs about one read and one pipeline of commits however many
    partitions it lands on. A reader that waits while a read is in flight without it (one taken up
    just now, or back from a fenced read) ends that read (cancelled: positioned reads take nothing)
    and its readers wait again together with it.
    """

    def __init__(self, client: aioredis.Redis, count: int, stats: Counter[str]):
        self.client, self.count, self.stats = client, count, stats
        self.readers = 0  # taking part
        self.waiting = 0  # of them, waiting in the read gathering or the one in flight
        self._gathering: SharedRead | None = None
        self._in_flight: SharedRead | None = None

    def join(self, positions: Mapping[str, str], block_ms: int) -> SharedRead:
        """The read to wait on (sent once no reader is busy)."""
        shared = self._gathering
        if shared is None:
            shared = self._gathering = SharedRead(block_ms)
        shared.positions.update(positions)
        shared.block_ms = min(shared.block_ms, block_ms)
        shared.members += 1
        self.waiting += 1
        self._send_when_ready()
        return shared

    def leave(self, shared: SharedRead) -> None:
        """A reader stops waiting: its read came back (already counted), or it was stopped."""
        if shared.reply is not None and shared.reply.done():
            return
        shared.members -= 1
        self.waiting -= 1
        if shared.members == 0:
            if shared is self._gathering:
                self._gathering = None
            elif shared.reply is not None:
                shared.reply.cancel()  # redis-py drops the connection of a cancelled command: nothing half-read
        self._send_when_ready()

    def overlaps(self, positions: Mapping[str, str]) -> bool:
        """Whether a stream of ``positions`` is in the read gathering (two readers of one stream)."""
        return self._gathering is not None and not self._gathering.positions.keys().isdisjoint(positions)

    def quit(self) -> None:
        """A reader no longer takes part (stopped, lost its lease, failed): it holds nothing back."""
        self.readers -= 1
        self._send_when_ready()

    def _send_when_ready(self) -> None:
        gathering = self._gathering
        if gathering is None or self.waiting < self.readers:
            return  # a reader busy with its batch comes back soon
        if self._in_flight is not None:  # its readers wait again with the gathering ones
            if self._in_flight.reply is not None:
                self._in_flight.reply.cancel()
            return
        self._send(gathering)

    def _send(self, shared: SharedRead) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a reader's coroutine closed by the garbage collector, off its loop
            return  # (the read's coroutine would be made and never awaited; no reader is left to read)
        if shared is self._gathering:
            self._gathering = None
        self._in_flight = shared
        self.stats["shared_reads"] += 1
        self.stats["shared_read_members"] += shared.members
        shared.reply = loop.create_task(self._read(dict(shared.positions), shared.block_ms))
        shared.reply.add_done_callback(lambda _: self._came_back(shared))

    async def _read(self, positions: dict[str, str], block_ms: int) -> Reply | None:
        """One XREAD of every stream; when it comes back with one of several, the others are read at
        once (without BLOCK) before any reader wakes. Redis (6.2, 7.0) serves a blocked XREAD with
        only the stream whose write woke it, though the commit that wrote it (a feed batch: one
        script for every partition) wrote the others' entries too: without this their readers took
        them one wake later, after the first partition's commit (docs/BENCHMARKS.md "Ninth round,
        latency": a whole extra read and commit on a third of the feed batches at 5,000 ticks/s)."""
        reply: Reply | None = await self.client.xread(positions, count=self.count, block=block_ms)
        if reply is None or len(reply) != 1 or len(positions) == 1:
            return reply
        woke = reply[0][0]
        self.stats["shared_read_rest"] += 1
        rest = await self.client.xread({s: at for s, at in positions.items() if s != woke}, count=self.count)
        return reply + (rest or [])

    def _came_back(self, shared: SharedRead) -> None:
        if shared.reply is not None and not shared.reply.cancelled():
            shared.reply.exception()  # (retrieved: each reader of it sees it)
        self.waiting -= shared.members  # busy with what it brought, until they wait again
        if self._in_flight is shared:
            self._in_flight = None
        shared.back.set_result(None)
        self._send_when_ready()


class WaitingReader:
    """One positioned reader taking part in its worker's :class:`SharedReads` (``close`` when done)."""

    def __init__(self, bus: Bus, count: int):
        self.client = bus.redis
        if is_cluster(self.client):  # a read of one slot per reader
            self.reads = None
        else:
            worker = _shared.setdefault(bus.redis, {})
            self.reads = worker.get(count) or worker.setdefault(count, SharedReads(bus.redis, count, bus.stats))
            self.reads.readers += 1
        self.count = count
        self._stop: asyncio.Event | None = None
        self._stopped: asyncio.Task[object] | None = None  # done once ``_stop`` is set (see _back_or_stop)

    def close(self) -> None:
        if self.reads is not None:
            self.reads.quit()
            self.reads = None
        if self._stopped is not None and not self._stopped.done():
            try:
                self._stopped.cancel()
            except RuntimeError:  # (closed by the garbage collector, its loop gone: nothing left to wake)
                pass
        self._stopped = None

    async def _back_or_stop(self, shared: SharedRead, stop: asyncio.Event) -> None:
        """Until ``shared`` came back or ``stop`` is set. One task waits on ``stop`` for the reader's
        life, instead of one made and cancelled per wait (``first_of``): a live batch wakes every
        reader of the worker, and three tasks per reader and batch were ~10 % of the strategy's CPU."""
        if stop.is_set():
            return
        if self._stopped is None or self._stop is not stop:
            if self._stopped is not None:
                self._stopped.cancel()
            self._stop, self._stopped = stop, asyncio.ensure_future(stop.wait())
        await asyncio.wait((shared.back, self._stopped), return_when=asyncio.FIRST_COMPLETED)

    async def read(self, positions: Mapping[str, str], *, block_ms: int, stop: asyncio.Event) -> PositionedRead | None:
        """Up to ``count`` entries per stream after ``positions``, waiting up to ``block_ms`` for the
        first; as :meth:`Bus.read_positioned` returns them (the streams share a slot, as there).
        None when nothing came (or ``stop`` was set)."""
        entries = await self.read_entries(positions, block_ms=block_ms, stop=stop)
        return None if entries is None else decode_positioned(entries)

    async def read_entries(
        self, positions: Mapping[str, str], *, block_ms: int, stop: asyncio.Event
    ) -> list[RawEntry] | None:
        """As :meth:`read`, the entries as stored, not decoded (:func:`decode_positioned` decodes
        them): a reader that must wait for room to hold them decoded (tradebot/common/in_flight.py)
        holds only these meanwhile."""
        reads = self.reads
        if reads is None or reads.overlaps(positions):
            return _entries(await _read_alone(self.client, positions, self.count, block_ms, stop) or [])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while not stop.is_set():
            left_ms = int((deadline - loop.time()) * 1000)
            if left_ms <= 0:
                return None
            shared = reads.join(positions, left_ms)
            try:
                await self._back_or_stop(shared, stop)  # (sent once no reader is busy)
            finally:  # (also when the reader itself is cancelled)
                reads.leave(shared)
            if not shared.back.done() or shared.reply is None:
                return None  # stopped
            if shared.reply.cancelled():
                continue  # ended for a reader that waits now: wait again, all together
            if shared.reply.exception() is not None and len(shared.positions) > len(positions):
                reply = await _read_alone(self.client, positions, self.count, left_ms, stop)
            else:
                reply = shared.reply.result()  # (a Redis error is raised here: the reader's to handle)
            mine = [(stream, rows) for stream, rows in reply or [] if stream in positions]
            if mine:
                return _entries(mine)
        return None


_shared: WeakKeyDictionary[aioredis.Redis, dict[int, SharedReads]] = WeakKeyDictionary()


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


def _entries(reply: Reply) -> list[RawEntry] | None:
    entries = [RawEntry(stream, entry_id, dict(fields or {})) for stream, rows in reply for entry_id, fields in rows]
    return entries or None


def decode_positioned(entries: list[RawEntry]) -> PositionedRead | None:
    """Entries read by position, decoded as :meth:`Bus.read_positioned` returns them (None: none)."""
    deliveries: list[Delivery] = []
    rejected: list[tuple[RawEntry, str]] = []
    ended: dict[str, str] = {}
    for entry in entries:
        ended[entry.stream] = entry.entry_id
        try:
            events, indexes, invalid = decode_entry(entry.fields or {})
        except ValueError as error:
            rejected.append((entry, str(error)))
            continue
        deliveries += [Delivery(entry.stream, entry.entry_id, *pair) for pair in zip(events, indexes, strict=True)]
        rejected += [(tick_dead_letter(entry, index), reason) for index, reason in invalid]
    return (deliveries, rejected, ended) if ended else None
