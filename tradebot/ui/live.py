"""Live fan-out for WebSocket clients: one reader of the bus per API process, many subscribers.

The hub follows the streams with plain XREAD (no consumer group, see :meth:`Bus.follow`), turns
each event into one JSON text, and hands that text to every subscriber whose channels and symbols
match, through a bounded queue that is never awaited. A subscriber whose queue is full is marked
slow and dropped: a browser that cannot keep up loses its connection, never the pipeline its pace.
While no one is subscribed the hub does not read at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tradebot.common.bus import RECOVERABLE_REDIS_ERRORS, Bus
from tradebot.common.lifecycle import first_of, wait_or_stop
from tradebot.common.models import Bar, ControlEvent, Event, Order, OrderChange, OrderEvent, Signal, Tick
from tradebot.common.streams import BARS, CONTROL_EVENTS, ORDER_EVENTS, order_streams, signal_streams, tick_streams

log = logging.getLogger(__name__)

CHANNELS = ("ticks", "bars", "signals", "orders", "fills", "risk", "health")
ALL_SYMBOLS = "*"
READ_COUNT = 1000
BLOCK_MS = 500
HEALTH_EVERY_S = 5.0
RECONNECT_S = 1.0


@dataclass(eq=False)
class Subscriber:
    """One WebSocket client: what it wants, and a bounded queue of JSON texts for it."""

    queue: asyncio.Queue[str]
    channels: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    slow: bool = False
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, channel: str, symbol: str | None) -> bool:
        """True when this client subscribed to ``channel`` for ``symbol`` (or for every symbol)."""
        if channel not in self.channels:
            return False
        return symbol is None or ALL_SYMBOLS in self.symbols or symbol in self.symbols

    def offer(self, text: str) -> None:
        """Queue ``text`` without waiting; a full queue marks the client slow (it is then dropped)."""
        if self.slow:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.slow = True
            self.dropped.set()


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
    def start(cls, tick: Tick) -> MinuteBar:
        """A bar opened by ``tick``."""
        minute = int(tick.timestamp.timestamp()) // 60 * 60
        return cls(minute, tick.price, tick.price, tick.price, tick.price, tick.size)

    def add(self, tick: Tick) -> None:
        """Fold ``tick`` (of this minute) in."""
        self.high, self.low = max(self.high, tick.price), min(self.low, tick.price)
        self.close = tick.price
        self.volume += tick.size


def messages(event: Any, bars: dict[str, MinuteBar]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(channel, symbol, data) of what ``event`` means to a dashboard; ``bars`` keeps the open bars."""
    if isinstance(event, Tick):
        bar = bars.get(event.symbol)
        minute = int(event.timestamp.timestamp()) // 60 * 60
        if bar is None or minute > bar.time:
            bar = bars[event.symbol] = MinuteBar.start(event)
        elif minute == bar.time:
            bar.add(event)
        # a late tick of an earlier minute moves no candle: the stored history has it
        return [("ticks", event.symbol, event.model_dump(mode="json")), ("bars", event.symbol, vars(bar).copy())]
    if isinstance(event, Bar):
        return [("bars", event.symbol, event.model_dump(mode="json"))] if event.timeframe == "1m" else []
    if isinstance(event, Signal):
        return [("signals", event.symbol, event.model_dump(mode="json"))]
    if isinstance(event, Order | OrderChange):  # an order, or a request to cancel / replace one
        return [("orders", event.symbol, event.model_dump(mode="json"))]
    if isinstance(event, OrderEvent):
        channel = "fills" if event.status == "filled" else "orders"
        return [(channel, event.symbol, event.model_dump(mode="json"))]
    if isinstance(event, ControlEvent):  # a change of trading state: for the whole account
        return [("risk", None, event.model_dump(mode="json"))]
    return []


def envelope(channel: str, symbol: str | None, data: dict[str, Any]) -> str:
    """The JSON text a client receives."""
    return json.dumps({"channel": channel, "symbol": symbol, "data": data}, separators=(",", ":"))


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
        self.delivered = 0
        self.dropped = 0
        self.following = False  # True once reading from the streams' tails (tests wait on it)
        self._listening = asyncio.Event()
        self._bars: dict[str, MinuteBar] = {}

    def subscribe(self) -> Subscriber:
        """A new client with no channels yet."""
        subscriber = Subscriber(asyncio.Queue(self.queue_size))
        self.subscribers.add(subscriber)
        self._listening.set()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a client (its connection closed or was dropped)."""
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            self._listening.clear()

    def publish(self, channel: str, symbol: str | None, data: dict[str, Any]) -> None:
        """Hand one message to every subscriber that wants it (serialised once for all of them)."""
        targets = [s for s in self.subscribers if s.wants(channel, symbol)]
        if not targets:
            return
        text = envelope(channel, symbol, data)
        for subscriber in targets:
            subscriber.offer(text)
            self.dropped += subscriber.slow
        self.delivered += len(targets)

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
                for stream, entry_id, event in await self.bus.follow(positions, count=READ_COUNT, block_ms=BLOCK_MS):
                    positions[stream] = entry_id
                    if event is not None:  # a malformed entry: its consuming role dead-letters it
                        self._dispatch(event)
        finally:
            self.following = False

    def _dispatch(self, event: Event) -> None:
        for channel, symbol, data in messages(event, self._bars):
            self.publish(channel, symbol, data)

    async def run_health(self, snapshot: Any, stop: asyncio.Event) -> None:
        """Every HEALTH_EVERY_S, while anyone listens, publish ``await snapshot()`` on ``health``."""
        while not stop.is_set():
            await first_of(stop, self._listening)
            if stop.is_set():
                return
            try:
                self.publish("health", None, {"time": datetime.now(UTC).isoformat(), **await snapshot()})
            except RECOVERABLE_REDIS_ERRORS as error:
                log.debug("health snapshot failed: %s", error)
            await wait_or_stop(stop, HEALTH_EVERY_S)
