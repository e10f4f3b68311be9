"""Live fan-out for WebSocket clients: one reader of the bus per API process, many subscribers.

The hub follows the streams with plain XREAD (no consumer group, see :meth:`Bus.follow`), at most
one read every READ_INTERVAL_S while entries keep coming, so a read carries many entries and the
cost of a read is shared by them. Each entry is decoded once and each message serialised once, for
every client alike; the messages of one read are joined once per distinct subscription, and each
client is handed that one string (a "chunk"). A client's sender sends what has gathered since its
last frame as one frame, a JSON array of messages. Within one read a symbol's live bar is sent in
its last state only (a state, not an event: the earlier states are already out of date).

A client that still has its bound of messages waiting when the next read comes is marked slow and
dropped: a browser that cannot keep up loses its connection, never the pipeline its pace. While no
one is subscribed the hub does not read at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.wire import decode_entry
from tradebot.common.codec import WireRow, WireTick, encode_event, tick_json, wire_rows, wire_tick
from tradebot.common.lifecycle import first_of, wait_or_stop
from tradebot.common.models import Bar, ControlEvent, Event, Order, OrderChange, OrderEvent, Signal, Tick
from tradebot.common.streams import (
    BARS,
    CONTROL_EVENTS,
    ORDER_EVENTS,
    SCHEMA_VERSION,
    TICKS_SCHEMA_VERSION,
    TICKS_TYPE,
    order_streams,
    signal_streams,
    tick_streams,
)

log = logging.getLogger(__name__)

CHANNELS = ("ticks", "bars", "signals", "orders", "fills", "risk", "health")
ALL_SYMBOLS = "*"
READ_COUNT = 1000  # entries per stream and read
READ_INTERVAL_S = 0.05  # a read at most this often while entries keep coming (a dashboard sees 20 frames/s)
FRAME_MESSAGES = 1000  # at most this many in one frame (well under a client's usual 1 MiB limit)
CHUNK_MESSAGES = 250  # a frame is made of whole chunks
BLOCK_MS = 500
HEALTH_EVERY_S = 5.0
RECONNECT_S = 1.0

Message = tuple[str, str | None, str]  # channel, symbol (None: for everyone), the JSON text
# The channels an event type's messages go to (see _other_message): an entry whose channels no one
# listens to is not decoded at all (pydantic costs some 20 times a tick's decode); the types missing
# here (gaps, equity samples, unknown ones) make no message.
CHANNELS_OF: dict[str, frozenset[str]] = {
    "Bar": frozenset({"bars"}),
    "Signal": frozenset({"signals"}),
    "Order": frozenset({"orders"}),
    "OrderChange": frozenset({"orders"}),
    "OrderEvent": frozenset({"orders", "fills"}),
    "ControlEvent": frozenset({"risk"}),
}
_NO_CHANNEL: frozenset[str] = frozenset()


@dataclass(eq=False)
class Subscriber:
    """One WebSocket client: what it wants, and what is waiting to be sent to it (bounded)."""

    limit: int  # messages it may have waiting when a read comes before it is dropped
    channels: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    slow: bool = False
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # something to send
    replies: deque[str] = field(default_factory=deque)
    chunks: deque[tuple[str, int]] = field(default_factory=deque)  # joined messages, and how many
    pending: int = 0  # messages in chunks

    def wants(self, channel: str, symbol: str | None) -> bool:
        """True when this client subscribed to ``channel`` for ``symbol`` (or for every symbol)."""
        if channel not in self.channels:
            return False
        return symbol is None or ALL_SYMBOLS in self.symbols or symbol in self.symbols

    def offer(self, chunks: Sequence[tuple[str, int]]) -> bool:
        """Queue one read's chunks (joined messages, and how many) without waiting; False when the
        client is slow: it still had ``limit`` messages waiting (it is then dropped). One read's
        worth is always taken, so a burst the client sends on in time drops no one, and what waits
        is bounded by ``limit`` plus one read."""
        if self.slow:
            return False
        if self.pending >= self.limit:
            self.slow = True
            self.dropped.set()
            return False
        self.chunks.extend(chunks)
        self.pending += sum(messages for _, messages in chunks)
        self.ready.set()
        return True

    def reply(self, text: str) -> None:
        """Queue an answer to the client's request (sent before waiting events)."""
        self.replies.append(text)
        self.ready.set()

    def next_frame(self) -> str | None:
        """The next text frame to send: a reply, or the waiting messages as one JSON array."""
        if self.replies:
            return self.replies.popleft()
        if not self.chunks:
            self.ready.clear()
            return None
        parts, count = [], 0
        while self.chunks and count + self.chunks[0][1] <= FRAME_MESSAGES:
            chunk, messages = self.chunks.popleft()
            parts.append(chunk)
            count += messages
        self.pending -= count
        return "[" + ",".join(parts) + "]"


@dataclass
class MinuteBar:
    """The open 1-minute bar of one symbol, built from its ticks (what moves the chart's last candle)."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @classmethod
    def start(cls, minute: int, price: float, size: float) -> MinuteBar:
        """A bar opened by a tick."""
        return cls(minute, price, price, price, price, size)

    def add(self, price: float, size: float) -> None:
        """Fold a tick of this minute in."""
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += size


def envelope(channel: str, symbol: str | None, data: str) -> str:
    """The JSON text of one message: ``data`` is already JSON."""
    return f'{{"channel":"{channel}","symbol":{json.dumps(symbol)},"data":{data}}}'


def _json(values: dict[str, Any]) -> str:
    return json.dumps(values, separators=(",", ":"))


def _bar_message(symbol: str, bar: MinuteBar) -> Message:
    return ("bars", symbol, envelope("bars", symbol, _json(vars(bar))))


def batch_messages(
    entries: Iterable[Mapping[str, str]], bars: dict[str, MinuteBar], channels: Collection[str] = CHANNELS
) -> list[Message]:
    """What the entries of one read (their fields, in order) mean to a dashboard on ``channels`` (the
    others' messages are not made); ``bars`` keeps the open minute bars (kept whoever listens).

    A tick is a ``ticks`` message with the tick's JSON as it is on the bus (checked against the
    tick schema, not rebuilt) and moves its symbol's live bar; each moved bar is one ``bars``
    message at the end, in its last state (a bar closed by a new minute: in its final one). An
    entry that is not a valid event is skipped: its consuming role dead-letters it; an entry of
    another type is decoded only when someone listens to its channel."""
    out: list[Message] = []
    moved: dict[str, MinuteBar] = {}
    ticks, live_bars = "ticks" in channels, "bars" in channels
    for fields in entries:
        kind = fields.get("type")
        if kind not in _TICK_TYPES and CHANNELS_OF.get(kind or "", _NO_CHANNEL).isdisjoint(channels):
            continue  # a message no one listens to, or none at all: not worth decoding
        for tick, data in _ticks_of(fields, out):
            _add_tick(tick, data, out, bars, moved, ticks=ticks, live_bars=live_bars)
    if live_bars:
        out.extend(_bar_message(symbol, bar) for symbol, bar in moved.items())
    return out


_TICK_TYPES = ("Tick", TICKS_TYPE)


def _ticks_of(fields: Mapping[str, str], out: list[Message]) -> list[tuple[WireTick | WireRow | Tick, str]]:
    """An entry's ticks, each with its JSON (as it is on the bus for a tick entry of version 1);
    the message of another event goes to ``out``. An invalid entry or tick is skipped: its consuming
    role dead-letters it."""
    kind, data = fields.get("type"), fields.get("data", "")
    if kind == TICKS_TYPE and fields.get("v") == TICKS_SCHEMA_VERSION:
        rows = wire_rows(data)
        if rows is not None:
            return [(row, tick_json(row)) for row in rows]
    elif kind == "Tick" and fields.get("v") == SCHEMA_VERSION:
        tick = wire_tick(data)
        if tick is not None:
            return [(tick, data)]
    try:
        events = decode_entry(fields).events
    except ValueError:
        return []
    found: list[tuple[WireTick | WireRow | Tick, str]] = []
    for event in events:
        if isinstance(event, Tick):  # valid only under pydantic's lax rules: as it reads it
            found.append((event, encode_event(event)))
        else:
            out.extend(_other_message(event))
    return found


def _add_tick(
    tick: WireTick | WireRow | Tick,
    data: str,
    out: list[Message],
    bars: dict[str, MinuteBar],
    moved: dict[str, MinuteBar],
    *,
    ticks: bool,
    live_bars: bool,
) -> None:
    """A tick's ``ticks`` message, and its move of its symbol's live bar."""
    symbol, price = tick.symbol, tick.price
    if ticks:
        out.append(("ticks", symbol, f'{{"channel":"ticks","symbol":"{symbol}","data":{data}}}'))
    minute = int(tick.timestamp.timestamp()) // 60 * 60
    bar = bars.get(symbol)
    if bar is None or minute > bar.time:
        closed = moved.pop(symbol, None)
        if closed is not None and live_bars:
            out.append(_bar_message(symbol, closed))
        bar = bars[symbol] = MinuteBar.start(minute, price, tick.size)
        moved[symbol] = bar
    elif minute == bar.time:
        bar.add(price, tick.size)
        moved[symbol] = bar
    # else a late tick of an earlier minute: it moves no candle (the stored history has it)


def _other_message(event: Event) -> list[Message]:
    if isinstance(event, Bar):
        if event.timeframe != "1m":
            return []
        channel: str = "bars"
    elif isinstance(event, Signal):
        channel = "signals"
    elif isinstance(event, Order | OrderChange):  # an order, or a request to cancel / replace one
        channel = "orders"
    elif isinstance(event, OrderEvent):
        channel = "fills" if event.status == "filled" else "orders"
    elif isinstance(event, ControlEvent):  # a change of trading state: for the whole account
        return [("risk", None, envelope("risk", None, event.model_dump_json()))]
    else:
        return []
    symbol = event.symbol
    return [(channel, symbol, envelope(channel, symbol, event.model_dump_json()))]


class Hub:
    """Reads the bus while anyone listens and fans events out to the subscribers."""

    def __init__(self, bus: Bus, partitions: int, *, queue_size: int = 1000) -> None:
        self.bus = bus
        self.streams = [
            *tick_streams(partitions),
            BARS,
            *signal_streams(partitions),
            *order_streams(partitions),
            ORDER_EVENTS,
            CONTROL_EVENTS,
        ]
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.delivered = 0  # messages handed to clients
        self.dropped = 0  # clients dropped as slow
        self.reads = 0
        self.following = False  # True once reading from the streams' tails (tests wait on it)
        self._listening = asyncio.Event()
        self._bars: dict[str, MinuteBar] = {}

    def subscribe(self) -> Subscriber:
        """A new client with no channels yet."""
        subscriber = Subscriber(self.queue_size)
        self.subscribers.add(subscriber)
        self._listening.set()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a client (its connection closed or was dropped)."""
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            self._listening.clear()

    def publish(self, channel: str, symbol: str | None, data: dict[str, Any]) -> None:
        """Hand one message to every subscriber that wants it."""
        self.fan_out([(channel, symbol, envelope(channel, symbol, _json(data)))])

    def fan_out(self, messages: Sequence[Message]) -> None:
        """Hand ``messages`` to the subscribers: joined once per distinct subscription, in order."""
        if not messages:
            return
        alike: dict[tuple[frozenset[str], frozenset[str]], list[Subscriber]] = {}
        for subscriber in self.subscribers:
            if not subscriber.slow and subscriber.channels:
                key = (frozenset(subscriber.channels), frozenset(subscriber.symbols))
                alike.setdefault(key, []).append(subscriber)
        for group in alike.values():
            channels, symbols = group[0].channels, group[0].symbols
            if ALL_SYMBOLS in symbols:
                wanted = [text for channel, _, text in messages if channel in channels]
            else:
                wanted = [text for channel, symbol, text in messages if group[0].wants(channel, symbol)]
            if not wanted:
                continue
            chunks = [
                (",".join(wanted[start : start + CHUNK_MESSAGES]), len(wanted[start : start + CHUNK_MESSAGES]))
                for start in range(0, len(wanted), CHUNK_MESSAGES)
            ]
            for subscriber in group:
                if subscriber.offer(chunks):
                    self.delivered += len(wanted)
                else:  # it fell behind its bound
                    self.dropped += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the streams from their tails whenever someone listens, until ``stop``."""
        while not stop.is_set():
            await first_of(stop, self._listening)
            if stop.is_set():
                return
            try:
                await self._follow(stop)
            except RECOVERABLE_REDIS_ERRORS as error:
                log.warning("live fan-out lost Redis (%s); retrying", error)
                await wait_or_stop(stop, RECONNECT_S)  # pacing a reconnect, not a wait on work

    async def _follow(self, stop: asyncio.Event) -> None:
        positions = await self.bus.tails(self.streams)
        self.following = True
        try:
            while self._listening.is_set() and not stop.is_set():
                followed = await self.bus.follow_fields(positions, count=READ_COUNT, block_ms=BLOCK_MS)
                self.reads += 1
                positions.update((stream, entry_id) for stream, entry_id, _ in followed)  # the last of each
                channels = set().union(*(s.channels for s in self.subscribers))
                self.fan_out(batch_messages([fields for _, _, fields in followed], self._bars, channels))
                read = Counter(stream for stream, _, _ in followed)
                if read and max(read.values()) < READ_COUNT:  # caught up: let the next read gather more
                    await wait_or_stop(stop, READ_INTERVAL_S)
        finally:
            self.following = False

    async def run_health(self, snapshot: Callable[[], Awaitable[dict[str, Any]]], stop: asyncio.Event) -> None:
        """Every HEALTH_EVERY_S, while anyone listens, :meth:`publish_health`."""
        while not stop.is_set():
            await first_of(stop, self._listening)
            if stop.is_set():
                return
            try:
                await self.publish_health(snapshot)
            except RECOVERABLE_REDIS_ERRORS as error:
                log.debug("health snapshot failed: %s", error)
            await wait_or_stop(stop, HEALTH_EVERY_S)

    async def publish_health(self, snapshot: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
        """Publish ``await snapshot()`` on ``health`` if anyone listens to it (a snapshot reads every
        stream's groups: it is not taken for clients that did not ask for it)."""
        if not any("health" in subscriber.channels for subscriber in self.subscribers):
            return False
        self.publish("health", None, {"time": datetime.now(UTC).isoformat(), **await snapshot()})
        return True
