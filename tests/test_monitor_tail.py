"""tradebot activity: follows signals, orders and fills on the bus without joining a group."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tradebot.common.bus import Bus
from tradebot.common.models import Order, OrderEvent, Signal
from tradebot.common.streams import ORDER_EVENTS, ORDERS_NEW, signal_stream
from tradebot.monitor.tail import follow, starting_positions

SIGNALS = signal_stream(0)
PARTITIONS = 2

NOW = datetime(2026, 12, 1, 14, 30, 5, 123000, tzinfo=UTC)


def _trade(n: int, *, rejected: bool = False) -> list[tuple[str, object]]:
    signal = Signal(
        id=f"s{n}", symbol="AAPL", timestamp=NOW, side="buy", price=220.1234, confidence=0.5, strategy="ma", tick_id="t"
    )
    order = Order.from_signal(signal, 10)
    event = OrderEvent(
        id=f"f{n}",
        symbol="AAPL",
        timestamp=NOW,
        client_order_id=order.id,
        status="rejected" if rejected else "filled",
        side="buy",
        quantity=10,
        price=None if rejected else 220.14567,
        commission=0.0 if rejected else 0.050001,
        reason="insufficient cash: buying 10 AAPL costs $2,201.46, cash is $12.00" if rejected else None,
    )
    return [(SIGNALS, signal), (ORDERS_NEW, order), (ORDER_EVENTS, event)]


async def test_shows_what_happens_after_it_starts_one_line_each(bus: Bus) -> None:
    await bus.publish(_trade(1))  # before the watcher starts: not shown
    positions = await starting_positions(bus, PARTITIONS, from_start=False)
    await bus.publish([*_trade(2), *_trade(3, rejected=True)])
    lines: list[str] = []
    shown = await follow(bus, positions, lines.append, asyncio.Event(), max_events=6, block_ms=100)
    assert shown == 6
    # Entries of different streams are interleaved by id, and ids order publish times only to the
    # millisecond: trade 3's signal can share an id with trade 2's fill. Each stream keeps its order.
    shown_as: dict[str, list[str]] = {}
    for line in lines:
        shown_as.setdefault(line[14:21].strip(), []).append(line)
    assert lines[0] == "14:30:05.123  signal  BUY  AAPL   @ 220.12  confidence 0.50  ma"
    assert shown_as["signal"] == [lines[0]] * 2
    order = "14:30:05.123  order   BUY  10 AAPL market  co-"
    assert [line.startswith(order) for line in shown_as["order"]] == [True, True]
    [fill] = shown_as["fill"]
    assert fill.startswith("14:30:05.123  fill    BUY  10 AAPL @ 220.15  commission $0.05  co-")
    assert shown_as["REJECT"] == [
        "14:30:05.123  REJECT  BUY  10 AAPL  insufficient cash: buying 10 AAPL costs $2,201.46, cash is $12.00"
    ]
    assert await bus.redis.xinfo_groups(SIGNALS) == []  # a watcher joins no consumer group


async def test_from_start_replays_what_the_streams_hold_and_flags_malformed_entries(bus: Bus) -> None:
    await bus.publish(_trade(1))
    await bus.publish_raw(SIGNALS, {"v": "1", "type": "Signal", "data": "{not json"})
    lines: list[str] = []
    positions = await starting_positions(bus, PARTITIONS, from_start=True)
    assert await follow(bus, positions, lines.append, asyncio.Event(), max_events=4, block_ms=100) == 4
    assert sum("malformed entry" in line for line in lines) == 1


async def test_stops_when_asked_while_nothing_happens(bus: Bus) -> None:
    stop = asyncio.Event()
    positions = await starting_positions(bus, PARTITIONS, from_start=False)
    task = asyncio.create_task(follow(bus, positions, [].append, stop, block_ms=100))
    stop.set()
    assert await asyncio.wait_for(task, timeout=30) == 0
