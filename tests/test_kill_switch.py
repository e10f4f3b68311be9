"""The kill switch across processes: a halt reaches three running execution replicas and three
strategy workers (each polls every third of a lease period), and holds after each of them is killed
with SIGKILL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import stream_lengths, wait_until
from tests.worker_processes import worker_environment, worker_processes
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.common.streams import (
    ORDER_EVENTS,
    ORDERS_NEW,
    STRATEGY_ROLE,
    signal_streams,
    tick_stream_for,
    tick_streams,
)
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.risk import control
from tradebot.risk.store import poll_interval, seen_versions
from tradebot.strategy.moving_average import MovingAverageCrossover

PARTITIONS = 4
LEASE_MS = 3000
START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
MODULES = ["tradebot.strategy.service"] * 3 + ["tradebot.execution.service"] * 3


def seen_by_pids(seen: dict[str, int], pids: list[int]) -> dict[int, int]:
    """The version each of the processes has seen (members are role:host-pid)."""
    by_pid = {int(member.rsplit("-", 1)[1]): version for member, version in seen.items()}
    return {pid: by_pid[pid] for pid in pids if pid in by_pid}


async def all_seen(bus: Bus, pids: list[int], version: int) -> bool:
    seen = seen_by_pids(await seen_versions(bus.redis), pids)
    return len(seen) == len(pids) and set(seen.values()) == {version}


@pytest.mark.timeout(420)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_halt_reaches_every_running_replica_and_holds_after_sigkill(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    env = worker_environment(settings, tick_partitions=PARTITIONS, lease_ttl_ms=LEASE_MS, bus_block_ms=50)
    with worker_processes(tmp_path / "logs") as workers:
        processes = [workers.start(module, env) for module in MODULES]
        pids = [p.pid for p in processes]
        await wait_until(lambda: all_seen(bus, pids, 0), timeout=60, what=f"six workers up\n{workers.logs()}")

        await control.apply_action(bus, "halt", actor="test", reason="kill switch test")
        # Seen by the same processes (none restarted): their polls found it. How soon is the poll
        # interval's promise (a third of a lease), not a deadline here: on a loaded 2-core machine
        # six workers can take longer than a lease to get the CPU, which is no bug.
        assert poll_interval(LEASE_MS) <= LEASE_MS / 3000
        await wait_until(
            lambda: all_seen(bus, pids, 1), timeout=60, what=f"every worker to see the halt\n{workers.logs()}"
        )

        for index, victim in enumerate(list(processes)):  # each one killed with -9 and started again
            workers.kill(victim)
            processes[index] = workers.start(MODULES[index], env)
        pids = [p.pid for p in processes]
        await wait_until(lambda: all_seen(bus, pids, 1), timeout=60, what=f"restarted workers\n{workers.logs()}")

        # Strategies still see ticks and make signals, but send no order; execution denies what comes.
        ticks = MockFeed(settings.symbols, 3, clock=stepping_clock(START)).take(900)
        strategy = MovingAverageCrossover(settings.short_window, settings.long_window)
        expected = sum(len(strategy.on_tick(tick)) for tick in ticks)
        assert expected > 10
        await bus.publish((tick_stream_for(tick.symbol, PARTITIONS), tick) for tick in ticks)
        manual = Order(
            id="co-manual", symbol="AAPL", side="buy", quantity=1, reference_price=100.0, signal_id="s", timestamp=START
        )
        await bus.publish([(ORDERS_NEW, manual)])
        await wait_until(
            lambda: _at_least(stream_lengths(bus.redis, signal_streams(PARTITIONS)), expected),
            timeout=60,
            what="all signals",
        )
        await wait_until(lambda: _at_least(bus.redis.xlen(ORDER_EVENTS), 1), timeout=60, what="the manual order")
        await wait_until(lambda: _drained(bus), timeout=60, what="strategies to finish the ticks")
    orders = [decode(fields) for _, fields in await bus.redis.xrange(ORDERS_NEW)]
    assert [o.id for o in orders] == ["co-manual"]
    events = [decode(fields) for _, fields in await bus.redis.xrange(ORDER_EVENTS)]
    assert [(e.status, (e.reason or "").split(":")[0]) for e in events] == [("denied", "halted")]  # type: ignore[attr-defined]


async def _at_least(value, threshold: int) -> bool:  # type: ignore[no-untyped-def]
    return await value >= threshold


async def _drained(bus: Bus) -> bool:
    return await bus.backlog(tick_streams(PARTITIONS), STRATEGY_ROLE) == 0
