"""``tradebot activity``: signals, orders and fills printed as they happen, one line each.

It follows the bus with plain XREAD (no consumer group), so watching never slows a worker down or
takes an entry from one, and it sees each event the moment it is published, before storage has
written it (``GET /signals`` and friends read what is stored).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from tradebot.common import rounding
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.wire import entry_order
from tradebot.common.config import ReadySettings
from tradebot.common.lifecycle import wait_or_stop
from tradebot.common.models import Event, Order, OrderChange, OrderEvent, Signal
from tradebot.common.streams import ORDER_EVENTS, order_streams, signal_streams


def watched(partitions: int) -> list[str]:
    """The streams ``tradebot tail`` follows: signals, orders (and their changes) and order events."""
    return [*signal_streams(partitions), *order_streams(partitions), ORDER_EVENTS]


RETRY_S = 1.0


def describe(event: Event) -> str:
    """One line a person reads at a glance."""
    when = event.timestamp.strftime("%H:%M:%S.%f")[:-3]
    if isinstance(event, Signal):
        return (
            f"{when}  signal  {event.side.upper():4} {event.symbol:6} @ {rounding.price(event.price)}  "
            f"confidence {event.confidence:.2f}  {event.strategy}"
        )
    if isinstance(event, Order):
        return (
            f"{when}  order   {event.side.upper():4} {event.quantity:g} {event.symbol} {event.order_type}  {event.id}"
        )
    if isinstance(event, OrderChange):
        return f"{when}  {event.action:7} {event.symbol} {event.target}  {event.id}"
    if isinstance(event, OrderEvent) and event.status == "filled":
        commission = f"commission ${rounding.money(event.commission):.2f}"
        return (
            f"{when}  fill    {event.side.upper():4} {event.quantity:g} {event.symbol} @ "
            f"{rounding.price(event.price)}  {commission}  {event.client_order_id}"
        )
    if isinstance(event, OrderEvent):
        label = {"rejected": "REJECT", "denied": "DENIED"}.get(event.status, event.status.upper())
        return (
            f"{when}  {label:7} {event.side.upper():4} {event.quantity:g} {event.symbol}  {event.reason or ''}".rstrip()
        )
    return f"{when}  {type(event).__name__} {event.symbol}"


async def starting_positions(bus: Bus, partitions: int, *, from_start: bool) -> dict[str, str]:
    """Where following begins: the start of each stream, or its newest entry now. Not "$": a "$"
    re-read later would skip whatever arrived in between."""
    streams = watched(partitions)
    return dict.fromkeys(streams, "0") if from_start else await bus.tails(streams)


async def follow(
    bus: Bus,
    positions: dict[str, str],
    emit: Callable[[str], None],
    stop: asyncio.Event,
    *,
    max_events: int | None = None,
    block_ms: int = 1000,
) -> int:
    """Print every signal, order and order event after ``positions`` until ``stop`` (or
    ``max_events``); returns how many were shown."""
    shown = 0
    while not stop.is_set() and (max_events is None or shown < max_events):
        try:
            entries = await bus.follow(positions, count=100, block_ms=block_ms)
        except RECOVERABLE_REDIS_ERRORS as error:
            emit(f"(Redis unavailable: {error}; retrying)")
            await wait_or_stop(stop, RETRY_S)
            continue
        # XREAD groups entries by stream; ids are publish times, so sorting them interleaves the streams.
        for stream, entry_id, event in sorted(entries, key=lambda entry: entry_order(entry[1])):
            positions[stream] = entry_id
            emit(describe(event) if event is not None else f"(malformed entry {entry_id} on {stream})")
            shown += 1
            if max_events is not None and shown >= max_events:
                break
    return shown


def watch(settings: ReadySettings, emit: Callable[[str], None], *, from_start: bool, max_events: int | None) -> int:
    """Follow the bus of ``settings`` until Ctrl-C or ``max_events``; returns how many were shown."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        bus = Bus.from_settings(settings)
        try:
            positions = await starting_positions(bus, settings.tick_partitions, from_start=from_start)
            return await follow(bus, positions, emit, stop, max_events=max_events, block_ms=settings.bus_block_ms)
        finally:
            await bus.close()

    return asyncio.run(main())
