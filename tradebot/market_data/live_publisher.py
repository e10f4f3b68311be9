"""What the live provider workers share: a bounded buffer, batched atomic publishing, watermarks.

The provider clients call our handlers from inside their own receive loops, so a handler only
converts and enqueues. One flusher task publishes whatever has queued up (a frame's worth, usually)
in one atomic commit together with the watermarks those events advanced and the repair markers
that changed (see gap_repair.py), so a watermark in Redis never runs ahead of the events behind it,
nor past a gap whose repair is not recorded. While Redis takes writes, a full buffer makes the
handler wait, which stops the client reading: backpressure reaches the provider's socket.

A live market does not wait, though. While Redis cannot take writes (down, refusing, or over
REDIS_MEMORY_BUDGET_MB) the buffer holds up to LIVE_BUFFER_EVENTS events; past that, events are
not published but recorded as a **gap** (source, symbols, first and last time, how many). Once
Redis takes writes again the gap is committed (a ``gap:`` record /health shows, and Gap events
storage writes to the ``gaps`` table), logged, counted, and handed to gap repair, which fetches
those minutes from the provider's REST history. Nothing goes missing without a record.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from redis.crc import key_slot

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, RedisRefusedError, get_many, is_cluster
from tradebot.common.bus.publishing import Commit, CommitResult
from tradebot.common.config import ReadySettings, Settings, SettingsError
from tradebot.common.consumer import ride_out_redis
from tradebot.common.lifecycle import Backoff, first_of
from tradebot.common.models import Bar, Event, Gap, Tick
from tradebot.common.streams import (
    BARS,
    GAPS,
    REPAIRED_TICKS,
    publisher_sequence_key,
    retained_streams,
    tick_stream_for,
)
from tradebot.market_data.gap_repair import (
    NO_REPAIR,
    WATERMARK_PREFIX,
    PendingRepairs,
    repair_key,
    watermark_after,
    watermark_key,
)
from tradebot.market_data.gaps import GapClosed, GapRecords, OpenGap
from tradebot.providers.convert import CONVERSION_ERRORS
from tradebot.universe import UniverseError, live_subscription_symbols

log = logging.getLogger(__name__)

BUFFER_SIZE = 50_000  # LIVE_BUFFER_EVENTS
MALFORMED_LOG_EVERY = 1000  # after the first few, log one malformed record in this many


@dataclass(frozen=True)
class RepairDone:
    """A symbol's repair has queued all its bars: move the watermark to ``minute`` and let the commit
    that carries this (so the last of those bars too) write the repair marker without it."""

    symbol: str
    minute: datetime
    repair: int


@dataclass(frozen=True)
class RepairedTrade:
    """A trade gap repair fetched from REST: published to ``REPAIRED_TICKS`` (storage only)."""

    tick: Tick


async def subscription_symbols(settings: Settings, provider: str) -> list[str]:
    """The symbols to stream (capped at MAX_WEBSOCKET_SYMBOLS), or one line saying what to fix."""
    try:
        symbols = await asyncio.to_thread(live_subscription_symbols, settings)
    except UniverseError as error:
        raise SettingsError(str(error)) from None
    if not symbols:
        raise SettingsError("no symbols to stream: set SYMBOL_MODE (and SYMBOLS for custom)")
    log.info(
        "%s: streaming %d symbols (MAX_WEBSOCKET_SYMBOLS=%d): %s",
        provider,
        len(symbols),
        settings.max_websocket_symbols,
        ", ".join(symbols[:10]) + (" …" if len(symbols) > 10 else ""),
    )
    return symbols


class LivePublisher:
    """Buffers a provider's events and publishes them in batches with their watermarks."""

    def __init__(
        self,
        bus: Bus,
        *,
        source: str,
        partitions: int,
        counters: Counter[str],
        batch_size: int = 500,
        buffer_size: int = BUFFER_SIZE,
        max_events: int | None = None,
    ):
        self.bus = bus
        self.source = source
        self.partitions = partitions
        self.counters = counters
        self.batch_size = batch_size
        self.seen: dict[str, datetime] = {}  # includes events still queued; read by gap repair
        self._committed: dict[str, datetime] = {}
        self.repairs = PendingRepairs()  # repair markers: written with the commits, read by gap repair
        self._queue: asyncio.Queue[Event | RepairDone | RepairedTrade] = asyncio.Queue(buffer_size)
        self._backoff = Backoff(f"redis ({source} feed)")
        self.flusher: asyncio.Task[None] | None = None
        self.max_events = max_events  # MAX_MESSAGES: the worker ends once this many are published
        self.enough = asyncio.Event()
        self._sequences: dict[str, str] = {}  # each sequence key's value after our last commit to it
        self._publisher_id = uuid.uuid4().hex[:12]
        self._buffer_size = buffer_size
        self._outage = False  # Redis refused the last attempt: a full buffer now means a gap
        self._flusher_moved = asyncio.Event()  # set when the flusher took events or an outage began
        self._gap: OpenGap | None = None
        self._gap_records = GapRecords(source)
        self._retained = retained_streams(partitions)
        # Gap repair registers itself here: given the symbols and the first time missed, it records
        # a repair (its marker goes out with the gap's commit) and returns the repair's id.
        self.on_gap: Callable[[list[str], datetime], int | None] | None = None

    async def load_watermarks(self, symbols: Sequence[str], stop: asyncio.Event) -> None:
        """Start from the watermarks and repair markers the last run committed (riding out a Redis outage)."""
        keys = [key(self.source, symbol) for key in (watermark_key, repair_key) for symbol in symbols]
        values = await ride_out_redis(lambda: get_many(self.bus.redis, keys), stop, self._backoff) or []
        marks, markers = values[: len(symbols)], values[len(symbols) :]
        for symbol, mark, marker in zip(symbols, marks, markers, strict=False):
            if mark:
                self.seen[symbol] = self._committed[symbol] = datetime.fromisoformat(str(mark))
            if marker:
                self.repairs.load(symbol, datetime.fromisoformat(str(marker)))

    async def offer(self, convert: Callable[[Any], Tick | Bar | None], record: Any) -> None:
        """Convert one provider record and enqueue it; a malformed one is logged, counted and skipped."""
        try:
            event = convert(record)
        except CONVERSION_ERRORS as error:
            self.malformed(record, error)
            return
        if event is not None:
            await self._put_live(event)

    def malformed(self, record: Any, error: BaseException) -> None:
        """Count a record or frame that is not a valid event; log the first few and then a sample."""
        self.counters["malformed"] += 1
        count = self.counters["malformed"]
        if count <= 10 or count % MALFORMED_LOG_EVERY == 0:
            log.warning(
                "%s: skipped malformed record #%d (%s: %s): %.200r",
                self.source,
                count,
                type(error).__name__,
                error,
                record,
            )

    async def put(self, event: Tick | Bar) -> None:
        """Enqueue an event (waits while the buffer is full)."""
        mark = watermark_after(event)
        if mark is not None:
            _advance(self.seen, event.symbol, mark)
        await self._queue.put(event)

    async def put_repaired(self, tick: Tick) -> None:
        """Enqueue a trade gap repair fetched (waits while the buffer is full); it moves no watermark."""
        await self._queue.put(RepairedTrade(tick))

    async def _put_live(self, event: Tick | Bar) -> None:
        """Enqueue a live event; while Redis cannot take writes and the buffer is full, record it as a gap.

        With Redis fine, a full buffer makes it wait for room (backpressure), but only until an
        outage begins: then the events are no longer held but recorded.
        """
        while self._queue.full() and not self._outage:
            self._flusher_moved.clear()
            await self._flusher_moved.wait()
        if not self._queue.full():
            await self.put(event)
            return
        if self._gap is None:
            self._gap = OpenGap(event.timestamp, event.timestamp)
            self.counters["gaps"] += 1
            log.error(
                "%s: buffer of %d events full while Redis cannot take writes: recording a gap from %s "
                "(gap repair fills it from REST once Redis is back)",
                self.source,
                self._buffer_size,
                event.timestamp.isoformat(),
            )
        self._gap.add(event)
        self.counters["gap_events"] += 1

    async def repair_done(self, symbol: str, minute: datetime, repair: int) -> None:
        """Repair ``repair`` of ``symbol`` has queued its bars (committed in order with the events)."""
        _advance(self.seen, symbol, minute)
        await self._queue.put(RepairDone(symbol, minute, repair))

    async def run(self, stop: asyncio.Event) -> None:
        """Publish batches until ``stop``, then publish what is still queued and return."""
        while not stop.is_set():
            batch = await self._next_batch(stop)
            if batch:
                await self._commit(batch, stop)
        while not self._queue.empty():
            await self._commit(self._take_queued(), stop)

    async def _next_batch(self, stop: asyncio.Event) -> list[Event | RepairDone | RepairedTrade]:
        if self._queue.empty():
            getter = asyncio.ensure_future(self._queue.get())
            await first_of(stop, getter)
            if not getter.done():
                getter.cancel()  # Queue.get cancelled before taking an item loses nothing
                return []
            return [getter.result(), *self._take_queued(self.batch_size - 1)]
        return self._take_queued()

    def _take_queued(self, limit: int | None = None) -> list[Event | RepairDone | RepairedTrade]:
        limit = self.batch_size if limit is None else limit
        items: list[Event | RepairDone | RepairedTrade] = []
        while not self._queue.empty() and len(items) < limit:
            items.append(self._queue.get_nowait())
        self._flusher_moved.set()
        return items

    def _stream_for(self, event: Event) -> str:
        if isinstance(event, Gap):
            return GAPS
        return tick_stream_for(event.symbol, self.partitions) if isinstance(event, Tick) else BARS

    def _marks(self, batch: Sequence[Event | RepairDone | RepairedTrade | GapClosed]) -> dict[str, datetime]:
        """The watermarks this batch moves forward (only its own live events and repairs count)."""
        marks: dict[str, datetime] = {}
        for item in batch:
            if isinstance(item, GapClosed | RepairedTrade):
                continue
            mark = item.minute if isinstance(item, RepairDone) else watermark_after(item)  # type: ignore[arg-type]
            committed = self._committed.get(item.symbol)
            if mark is not None and (committed is None or mark > committed):
                _advance(marks, item.symbol, mark)
        return marks

    async def _commit(
        self, batch: Sequence[Event | RepairDone | RepairedTrade | GapClosed], stop: asyncio.Event
    ) -> None:
        events: list[Event] = [item for item in batch if isinstance(item, Event)]
        repaired_trades: list[tuple[str, Event]] = [
            (REPAIRED_TICKS, item.tick) for item in batch if isinstance(item, RepairedTrade)
        ]
        marks = self._marks(batch)
        repaired: dict[str, int] = {}
        for item in batch:
            if isinstance(item, RepairDone):
                repaired[item.symbol] = max(item.repair, repaired.get(item.symbol, 0))
        markers = self.repairs.to_commit(repaired)
        state = {watermark_key(self.source, s): mark.isoformat() for s, mark in marks.items()}
        state |= {
            repair_key(self.source, s): marker.isoformat() if marker else NO_REPAIR for s, marker in markers.items()
        }
        state |= self._gap_records.repaired(
            (item.symbol, item.repair) for item in batch if isinstance(item, RepairDone)
        )
        for item in batch:
            if isinstance(item, GapClosed):
                gap_events, record = self._gap_records.writes(item)
                events += gap_events
                state |= record
        commit = Commit(publish=[(self._stream_for(event), event) for event in events] + repaired_trades, state=state)
        done = await self._ride_out(commit, stop)
        if done is None:  # stopped while Redis is away: gap repair after the restart covers these minutes
            self.repairs.not_committed(markers)
            self.counters["unpublished"] += len(commit.publish)
            log.warning(
                "%s: %d event(s) not published (stopping while Redis is unavailable)", self.source, len(commit.publish)
            )
            return
        self.repairs.committed(repaired)
        self._committed.update(marks)
        if self._gap is not None:
            await self._close_gap(stop)
        ticks = sum(isinstance(event, Tick) for event in events)
        self.counters["ticks"] += ticks
        self.counters["bars"] += sum(isinstance(event, Bar) for event in events)
        if self.max_events is not None and self.counters["ticks"] + self.counters["bars"] >= self.max_events:
            self.enough.set()

    async def _ride_out(self, commit: Commit, stop: asyncio.Event) -> bool | None:
        """Commit, waiting through outages and past the memory budget; None if stopped meanwhile."""
        applied: set[int] = set()  # on a cluster, the parts of the batch already committed
        while True:
            try:
                if not await self._room():
                    raise RedisRefusedError("over REDIS_MEMORY_BUDGET_MB: consumers are behind")
                done = await self._commit_once(commit, applied)
                self._outage = False
                self._backoff.succeeded()
                return done
            except RECOVERABLE_REDIS_ERRORS as error:
                self._outage = True
                self._flusher_moved.set()
                if stop.is_set():
                    return None
                await self._backoff.wait(error, stop)

    async def _room(self) -> bool:
        """Within the memory budget, after trimming what every consumer group has finished."""
        if await self.bus.has_room():
            return True
        for stream, readers in self._retained.items():
            await self.bus.trim_consumed(stream, readers)
        return await self.bus.has_room()

    async def _close_gap(self, stop: asyncio.Event) -> None:
        """Redis takes writes again: commit the gap's record and hand it to gap repair."""
        gap, self._gap = self._gap, None
        assert gap is not None
        repair = self.on_gap(sorted(gap.symbols), gap.first) if self.on_gap else None
        log.error(
            "%s: gap of %d event(s) for %d symbol(s) from %s to %s recorded; %s",
            self.source,
            gap.dropped,
            len(gap.symbols),
            gap.first.isoformat(),
            gap.last.isoformat(),
            "gap repair fills it from REST" if repair is not None else "no gap repair for this source",
        )
        await self._commit([GapClosed(gap, repair)], stop)

    async def _commit_once(self, commit: Commit, applied: set[int]) -> bool:
        """Apply the batch exactly once, even when it is retried after a lost reply.

        On one Redis the batch is one commit; on a cluster one per slot it writes to, events first,
        then gap records and repair markers, then watermarks (``slot_commits``), so a crash between
        them leaves a watermark behind its events (gap repair fetches those minutes again, under the
        same ids), never ahead. ``applied`` holds the parts of this batch already committed: a retry
        goes on with the next.
        """
        if is_cluster(self.bus.redis):
            parts = [(part, publisher_sequence_key(self.source, _first_key(part))) for part in slot_commits(commit)]
        else:
            parts = [(commit, publisher_sequence_key(self.source))]
        for index, (part, key) in enumerate(parts):
            if index not in applied:
                await self._commit_part(part, key)
                applied.add(index)
        return True

    async def _commit_part(self, commit: Commit, key: str) -> None:
        """Each commit moves its sequence key, compare-and-set, to "<n>:<this publisher>": if the
        guard fails and the key already shows this commit, the earlier attempt landed; if it shows
        anything else, another publisher of the same source moved it, and this one goes after theirs.
        """
        if key not in self._sequences:
            self._sequences[key] = await self.bus.redis.get(key) or ""
        while True:
            last = self._sequences[key]
            mine = f"{int(last.split(':', 1)[0] or 0) + 1}:{self._publisher_id}"
            result = await self.bus.commit("", replace(commit, state={**commit.state, key: mine}, guard=(key, last)))
            current = await self.bus.redis.get(key) if result is CommitResult.STALE else mine
            if current == mine:
                self._sequences[key] = mine
                return
            log.warning(
                "%s: another %s publisher is running (sequence %s); publishing after it",
                self.source,
                self.source,
                current,
            )
            self._sequences[key] = current or ""


def slot_commits(commit: Commit) -> list[Commit]:
    """A batch's commit split by cluster slot, in the order that keeps every watermark behind its
    events and its gap's repair marker: the events' slots, then other state, then the watermarks."""
    parts: dict[tuple[int, int], Commit] = {}
    for stream, event in commit.publish:
        parts.setdefault((0, key_slot(stream.encode())), Commit()).publish.append((stream, event))
    for key, value in commit.state.items():
        phase = 2 if key.startswith(WATERMARK_PREFIX) else 1
        parts.setdefault((phase, key_slot(key.encode())), Commit()).state[key] = value
    return [parts[slot] for slot in sorted(parts, key=lambda phase_slot: phase_slot[0])]  # stable sort


def _first_key(commit: Commit) -> str:
    return commit.publish[0][0] if commit.publish else next(iter(commit.state))


def _advance(marks: dict[str, datetime], symbol: str, mark: datetime) -> None:
    """Watermarks only move forward."""
    current = marks.get(symbol)
    if current is None or mark > current:
        marks[symbol] = mark


@asynccontextmanager
async def live_publisher(
    settings: ReadySettings, source: str, symbols: Sequence[str], counters: Counter[str], stop: asyncio.Event
) -> AsyncIterator[LivePublisher]:
    """A publisher with its flusher running; on exit everything queued is published, then Redis closed."""
    bus = Bus.from_settings(settings)
    publisher = LivePublisher(
        bus,
        source=source,
        partitions=settings.tick_partitions,
        counters=counters,
        batch_size=settings.bus_batch_size,
        buffer_size=settings.live_buffer_events,
        max_events=settings.max_messages,
    )
    flushed = asyncio.Event()
    publisher.flusher = asyncio.create_task(publisher.run(flushed), name=f"{source}-flusher")
    try:
        await publisher.load_watermarks(symbols, stop)
        yield publisher
    finally:
        flushed.set()
        await asyncio.gather(publisher.flusher, return_exceptions=True)
        await bus.close()
    if publisher.flusher.done() and not publisher.flusher.cancelled() and publisher.flusher.exception():
        raise publisher.flusher.exception()  # type: ignore[misc]


async def run_until_stopped(stream: Coroutine[Any, Any, None], stop: asyncio.Event, publisher: LivePublisher) -> None:
    """Run a provider stream until ``stop`` or MAX_MESSAGES published (then cancel it). Errors of the
    stream, or of the publisher's flusher (which must never end on its own), propagate."""
    task = asyncio.create_task(stream)
    try:
        await first_of(stop, task, publisher.enough, *([publisher.flusher] if publisher.flusher else []))
    finally:
        await cancel_and_wait(task)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it has ended.

    Once is not always enough: Python 3.11's ``asyncio.wait_for`` swallows a cancellation that
    arrives as its inner future completes, and both client libraries receive through wait_for.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
