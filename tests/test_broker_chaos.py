"""1,000 orders to the Alpaca emulator through the real alpaca-py, the execution process killed -9
at random moments and every fault injected: no order doubled at the broker, every order ends in
exactly one terminal event, and the positions on the bus are the broker's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import TERMINAL_STATUSES
from tradebot.common.streams import ORDER_EVENTS, ORDERS_NEW

from .broker_helpers import BURSTS_ALLOWED, by_order, finished, order, order_events, positions_from
from .emulators.alpaca_trading import FAULTS, AlpacaTradingEmulator
from .helpers import wait_until
from .worker_processes import worker_environment, worker_processes

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]
ORDERS = 1_000
KEY, SECRET = "AKCHAOS0123456789XYZ", "chaos-secret-never-in-a-log-0123456789"  # distinctive, to search logs for
SYMBOLS = ["AAPL", "MSFT", "NVDA", "SPY"]
KILLS = 10


async def _grown(bus: Bus, length: int) -> bool:
    return await bus.redis.xlen(ORDER_EVENTS) > length


def chaos_orders(rng: random.Random) -> list:
    """Mostly market orders (some filling in parts), some limits that cannot fill now (ioc: canceled)."""
    orders = []
    for number in range(ORDERS):
        symbol, side = rng.choice(SYMBOLS), rng.choice(["buy", "sell"])
        if rng.random() < 0.1:
            orders.append(order(number, side, 5, symbol, order_type="limit", limit_price=1.0 if side == "buy"
                                else 10_000.0, time_in_force="ioc"))  # fmt: skip
        else:
            orders.append(order(number, side, rng.choice([1, 2, 5, 10]), symbol))
    return orders


async def test_a_thousand_orders_through_kills_and_faults_are_never_doubled(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(18)
    emulator = AlpacaTradingEmulator(key=KEY, secret=SECRET, partial_fills=2, drift=0.01, slow_s=2.0).start()
    emulator.rest.fault_rate, emulator.stream.drop_after_fills = 0.1, 97
    emulator.rest.throttle_s = 0.3
    env = worker_environment(
        settings,
        execution_broker="alpaca",
        alpaca_key=KEY,
        alpaca_secret=SECRET,
        alpaca_trading_url=emulator.url,
        alpaca_trading_stream_url=emulator.stream_url,
        alpaca_timeout_s=1.0,
        alpaca_poll_interval_s=0.2,
        alpaca_requests_per_minute=60_000,
        reconcile_interval_s=2.0,
        lease_ttl_ms=1000,
        bus_block_ms=100,
        log_level="DEBUG",  # every line any library writes, searched for the keys below
        **BURSTS_ALLOWED,
    )
    orders = chaos_orders(rng)
    ours = {o.id for o in orders}
    kills = 0
    try:
        with worker_processes(tmp_path / "logs") as workers:
            execution = workers.start("tradebot.execution.service", env)
            published = 0
            while published < ORDERS or kills < KILLS:
                chunk = orders[published : published + ORDERS // KILLS]
                await bus.publish((ORDERS_NEW, o) for o in chunk)
                published += len(chunk)
                progress = await bus.redis.xlen(ORDER_EVENTS)
                await wait_until(
                    functools.partial(_grown, bus, progress), 60, "the restarted execution to trade"
                )  # it owns the lease and works: now is a moment worth killing it in
                await asyncio.sleep(rng.uniform(0.0, 0.8))  # a random moment of its work, not a wait for a result
                workers.kill(execution)
                kills += 1
                execution = workers.start("tradebot.execution.service", env)

            async def all_ended() -> bool:
                return finished(await order_events(bus), ours)

            try:
                await wait_until(all_ended, 220, "a terminal event for every order")
            except AssertionError:
                events = await order_events(bus)
                ended = {e.client_order_id for e in events if e.status in TERMINAL_STATUSES}
                stuck = {
                    cid: ([e.status for e in by_order(events)[cid]], emulator.book.find_by_client_id(cid))
                    for cid in sorted(ours - ended)[:5]
                }
                raise AssertionError(f"{len(ours - ended)} orders never ended: {stuck}\n{workers.logs()}") from None
            events = await order_events(bus)
            logs = "".join(path.read_text() for path in (tmp_path / "logs").glob("*.log"))
    finally:
        emulator.stop()

    book = emulator.book
    at_broker = Counter(o["client_order_id"] for o in book.orders.values() if o["client_order_id"] in ours)
    assert kills == KILLS, kills
    assert all(emulator.rest.faults_served[f] > 0 for f in FAULTS), emulator.rest.faults_served
    assert max(at_broker.values()) == 1, "an order of ours reached the broker twice"
    assert len(at_broker) == book.submissions  # and the broker has no orders we do not know of
    assert len({e.id for e in events}) == len(events), "an event was published twice"
    grouped = by_order(events)
    assert set(grouped) == ours
    for client_id, evs in grouped.items():
        ends = [e.status for e in evs if e.status in TERMINAL_STATUSES]
        assert len(ends) == 1, (client_id, [e.status for e in evs])
        if ends == ["rejected"]:
            assert client_id not in at_broker
    assert KEY not in logs
    assert SECRET not in logs
    broker_positions = {s: q for s, q in book.positions.items() if abs(q) > 1e-9}
    assert positions_from(events) == pytest.approx(broker_positions)
    logging.getLogger(__name__).warning(
        f"broker chaos: {ORDERS} orders, {kills} kills -9, faults {emulator.rest.faults_served}, "
        f"{emulator.stream.drops} stream drops, {book.duplicate_submissions} duplicate-id refusals, "
        f"{len(events)} events"
    )
