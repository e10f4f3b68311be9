"""Execution killed -9 between a cancel or replace request and its outcome: the restarted worker
settles it by lookup, sends nothing twice, and tells each outcome once (real processes, real
Redis, the Alpaca emulator through alpaca-py, and the paper broker)."""

from __future__ import annotations

import functools
from pathlib import Path

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.streams import ORDER_EVENTS, ORDERS_NEW

from .broker_helpers import KEY, SECRET, by_order, order_events
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .helpers import wait_until
from .test_broker_order_changes import change, once_each, resting, told, until_statuses
from .worker_processes import worker_environment, worker_processes


def alpaca_environment(settings: Settings, emulator: AlpacaTradingEmulator) -> dict[str, str]:
    return worker_environment(
        settings,
        execution_broker="alpaca",
        alpaca_key=KEY,
        alpaca_secret=SECRET,
        alpaca_trading_url=emulator.url,
        alpaca_trading_stream_url=emulator.stream_url,
        alpaca_timeout_s=1.0,
        alpaca_poll_interval_s=0.2,
        alpaca_requests_per_minute=60_000,
        lease_ttl_ms=1000,
        bus_block_ms=100,
        risk_duplicate_window_s=0,  # two resting buys of one symbol in a row are the point here
    )


async def test_a_kill_between_the_cancel_or_replace_and_its_answer_doubles_nothing(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    emulator = AlpacaTradingEmulator(key=KEY, secret=SECRET).start()
    emulator.rest.hold_s = 5.0  # the answers come only after the process that asked is dead
    replace = change(2, "replace", "co-2", limit_price=85.0)
    try:
        with worker_processes(tmp_path) as workers:
            env = alpaca_environment(settings, emulator)
            execution = workers.start("tradebot.execution.service", env)
            await bus.publish([(ORDERS_NEW, resting(1)), (ORDERS_NEW, resting(2))])
            await wait_until(lambda: emulator.book.submissions == 2, 30, "both orders at the broker")
            emulator.fault_next_change("hold", "hold")
            await bus.publish([(ORDERS_NEW, change(1, "cancel", "co-1")), (ORDERS_NEW, replace)])
            await wait_until(
                lambda: emulator.rest.change_requests == {"DELETE": 1, "PATCH": 1}, 30, "both requests applied"
            )
            workers.kill(execution)  # the cancel and the replace took effect; nobody heard the answers
            workers.start("tradebot.execution.service", env)
            await until_statuses(bus, "co-1", "canceled")
            events = await until_statuses(bus, replace.replacement_id, "accepted")
    finally:
        emulator.stop()
    assert told(events, "co-1") == ["cancel_requested", "submitted", "accepted", "canceled"]
    assert told(events, "co-2") == ["replace_requested", "submitted", "accepted", "replaced"]
    assert emulator.rest.change_requests == {"DELETE": 1, "PATCH": 1}, "the restarted worker sent nothing again"
    replacements = [o for o in emulator.book.orders.values() if o.get("replaces")]
    assert [o["client_order_id"] for o in replacements] == [replace.replacement_id]
    once_each(events)


async def _grown(bus: Bus, length: int) -> bool:
    return await bus.redis.xlen(ORDER_EVENTS) > length


async def test_paper_cancels_and_replaces_through_kills_are_told_once(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    env = worker_environment(settings, lease_ttl_ms=1000, bus_block_ms=100, bus_batch_size=5,
                             risk_duplicate_window_s=0, risk_max_symbol_orders_per_second=1000)  # fmt: skip
    pairs = 30
    requests = [
        change(n, "cancel", f"co-{n}") if n % 2 else change(n, "replace", f"co-{n}", limit_price=80.0)
        for n in range(pairs)
    ]
    with worker_processes(tmp_path) as workers:
        execution = workers.start("tradebot.execution.service", env)
        for start in range(0, pairs, 10):
            published = [(ORDERS_NEW, resting(n)) for n in range(start, start + 10)]
            published += [(ORDERS_NEW, r) for r in requests[start : start + 10]]
            progress = await bus.redis.xlen(ORDER_EVENTS)
            await bus.publish(published)
            await wait_until(functools.partial(_grown, bus, progress), 30, "execution at work")
            workers.kill(execution)  # wherever it is: between a request and its outcome, or not
            execution = workers.start("tradebot.execution.service", env)

        async def all_told() -> bool:
            grouped = by_order(await order_events(bus))
            return all(len(grouped[f"co-{n}"]) >= 3 for n in range(pairs))

        await wait_until(all_told, 60, "every request's outcome")
    events = await order_events(bus)
    once_each(events)
    for n in range(pairs):
        ended = "canceled" if n % 2 else "replaced"
        assert told(events, f"co-{n}") == [f"{'cancel' if n % 2 else 'replace'}_requested", "accepted", ended]
    for request in requests[::2]:
        assert told(events, request.replacement_id) == ["accepted"]  # 80 is not reached: it rests
