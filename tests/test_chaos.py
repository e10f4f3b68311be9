"""The chaos suite (``pytest -m chaos``): the reliability claims, proven under faults.

During a 100,000-tick run of the whole pipeline (mock feed, strategy ×2, execution, storage ×2 as
supervised processes), ten random workers are killed with SIGKILL (each is restarted by the
supervisor), Redis is restarted once and PostgreSQL is stopped for 20 s once, while malformed
entries are injected into the tick streams. Afterwards every published tick is stored exactly once,
every signal produced exactly one order, no order was filled twice, and the dead-letter streams hold
exactly the injected entries.

Redis is restarted with SIGTERM, which makes it write and fsync its append-only file, so nothing
acknowledged is lost; a SIGKILL of Redis itself could lose up to a second of writes
(``appendfsync everysec``) and is outside what tradebot promises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from functools import cache
from pathlib import Path

import asyncpg
import pytest

from tests.chaos_helpers import (
    BAD_ENTRIES,
    ChaosServers,
    LoggedWorker,
    Supervision,
    chaos_servers,
    fault_schedule,
    inject_bad_entry,
    through_outages,
)
from tests.helpers import wait_until
from tests.redis_versions import use_redis
from tests.worker_processes import worker_environment
from tradebot.common.bus import Bus, connect, decode
from tradebot.common.config import Settings
from tradebot.common.models import Event, Order, OrderEvent, Tick
from tradebot.common.streams import (
    DEAD_LETTER_PREFIX,
    EXECUTION_ROLE,
    ORDER_EVENTS,
    ORDERS_NEW,
    SIGNALS,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    storage_streams,
    tick_stream,
    tick_streams,
)
from tradebot.execution.broker import PaperBroker
from tradebot.market_data.mock_feed import MockFeed
from tradebot.storage.schema import migrate
from tradebot.strategy.moving_average import MovingAverageCrossover

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
log = logging.getLogger("tests.chaos")

TICKS = 100_000
KEEPER_GROUP = "chaos-keeper"
TICKS_PER_SECOND = 1_500  # ~67 s of feed
KILLS = 10
SEED = 20_240_611
PARTITIONS = 8
SYMBOLS = [
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "GOOGL",
    "META",
    "TSLA",
    "JPM",
    "V",
    "MA",
    "XOM",
    "UNH",
    "JNJ",
    "WMT",
    "COST",
    "HD",
    "PG",
    "KO",
    "PEP",
    "DIS",
    "NFLX",
    "AMD",
    "INTC",
    "CSCO",
]
SCALE = {"market_data": 1, "strategy": 2, "execution": 1, "storage": 2}
DRAIN_TIMEOUT_S = 300.0
POISON_BATCH_WARNING = "retrying entry by entry"  # tradebot.common.consumer's warning for a failing batch


def chaos_settings(servers: ChaosServers, data_dir: Path) -> Settings:
    """Short lease and claim times so a killed worker's work is taken over within seconds."""
    return Settings(
        _env_file=None,
        redis_url=servers.redis.url,
        database_url=servers.postgres.url,
        data_dir=data_dir,
        tick_partitions=PARTITIONS,
        symbol_mode="custom",
        symbols=SYMBOLS,
        mock_seed=SEED,
        mock_ticks_per_second=TICKS_PER_SECOND,
        mock_max_ticks=TICKS,
        bus_batch_size=100,
        lease_ttl_ms=2000,
        claim_idle_ms=2000,
        heartbeat_ttl_s=3,
        grace_period_s=5,
    )


def supervised_workers(settings: Settings, log_dir: Path) -> list[LoggedWorker]:
    """Every role of the run as a supervised process with the chaos settings in its environment."""
    names = (
        "tick_partitions",
        "symbol_mode",
        "mock_seed",
        "mock_ticks_per_second",
        "mock_max_ticks",
        "redis_memory_budget_mb",
        "bus_batch_size",
        "lease_ttl_ms",
        "claim_idle_ms",
        "heartbeat_ttl_s",
        "grace_period_s",
    )
    overrides = {name: getattr(settings, name) for name in names}
    env = worker_environment(settings, symbols=",".join(SYMBOLS), **overrides)
    log_dir.mkdir(parents=True, exist_ok=True)
    return [LoggedWorker(role, i + 1, env=env, log_dir=log_dir) for role, count in SCALE.items() for i in range(count)]


async def run_faults(servers: ChaosServers, supervision: Supervision, bus: Bus) -> dict[str, set[str]]:
    """Play the fault schedule; returns the injected bad entry ids per tick stream."""
    began = time.monotonic()
    injected: dict[str, set[str]] = {}
    bad_entries = iter(BAD_ENTRIES)
    for n, fault in enumerate(fault_schedule(KILLS, len(BAD_ENTRIES), TICKS / TICKS_PER_SECOND)):
        await asyncio.sleep(max(0.0, began + fault.at_s - time.monotonic()))  # the fault's moment, not a wait
        if fault.kind == "kill":
            supervision.kill_random()
        elif fault.kind == "bad":
            stream = tick_stream(n % PARTITIONS)
            injected.setdefault(stream, set()).add(await inject_bad_entry(bus, stream, next(bad_entries)))
        elif fault.kind == "redis_restart":
            await asyncio.to_thread(servers.restart_redis)
        elif fault.kind == "postgres_stop":
            await asyncio.to_thread(servers.postgres.stop)
        elif fault.kind == "postgres_start":
            await asyncio.to_thread(servers.postgres.start)
        log.warning("chaos: %s at %.0f s", fault.kind, time.monotonic() - began)
    return injected


async def everything_done(bus: Bus, db: asyncpg.Pool, supervision: Supervision) -> bool:
    """The feed finished, every group drained, and every stream's events are in the database."""
    feed = next(w for w in supervision.workers if w.role == "market_data")
    if not feed.finished or await _count(db, "ticks") < TICKS:
        return False
    for streams, group in (
        (tick_streams(PARTITIONS), STRATEGY_ROLE),
        ([ORDERS_NEW], EXECUTION_ROLE),
        (storage_streams(PARTITIONS), STORAGE_GROUP),
    ):
        if await through_outages(lambda s=streams, g=group: bus.backlog(s, g)):
            return False
    for stream, table in ((SIGNALS, "signals"), (ORDERS_NEW, "orders"), (ORDER_EVENTS, "fills")):
        if await bus.redis.xlen(stream) != await _count(db, table):
            return False
    return True


async def _count(db: asyncpg.Pool, table: str) -> int:
    try:
        return await db.fetchval(f"SELECT count(*) FROM {table}")
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
        return -1  # PostgreSQL is being restarted


async def test_every_effect_happens_exactly_once_through_kills_and_server_restarts(
    tmp_path: Path, redis_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_redis(redis_version, monkeypatch)  # once on Redis 6.2, once on Redis 7
    started = time.monotonic()
    with chaos_servers(tmp_path / "servers") as servers:
        settings = chaos_settings(servers, tmp_path)
        await asyncio.to_thread(migrate, settings.database_url or "")
        bus = Bus(connect(settings.redis_url or ""))
        for stream in storage_streams(PARTITIONS):  # the checks read every stream afterwards: a group
            await bus.ensure_group(stream, KEEPER_GROUP)  # that never reads holds back retention
        db = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=2)  # no reconnect noise
        supervision = Supervision(supervised_workers(settings, tmp_path / "logs"), random.Random(SEED))
        supervision.start()
        try:
            injected = await run_faults(servers, supervision, bus)
            await wait_until(
                lambda: everything_done(bus, db, supervision),
                timeout=DRAIN_TIMEOUT_S,
                what=f"the pipeline to drain\n{supervision.logs()}",
            )
        finally:
            await supervision.stop(settings.grace_period_s)
        log.warning(
            "chaos run: kills %s, restarts %s, %.0f s",
            dict(supervision.kills),
            supervision.restarts(),
            time.monotonic() - started,
        )
        assert sum(supervision.kills.values()) == KILLS
        try:
            await assert_ticks_stored_exactly_once(bus, db, injected)
            await assert_one_order_per_signal(bus, db)
            await assert_no_order_filled_twice(bus, db, settings)
            await assert_dead_letters_are_the_injected_entries(bus, injected)
            assert_outages_never_counted_against_good_entries(supervision)
            log.warning(
                "chaos run verified: %s",
                {table: await _count(db, table) for table in ("ticks", "signals", "orders", "fills")},
            )
        finally:
            await db.close()
            await bus.close()


@cache
def expected_ticks() -> list[Tick]:
    """The feed's sequence: a pure function of seed, symbols and position (ids never depend on the clock)."""
    return MockFeed(SYMBOLS, SEED).take(TICKS)


async def stream_events(bus: Bus, stream: str, skip: set[str] | frozenset[str] = frozenset()) -> list[Event]:
    """Every event of a stream in order (``skip``: entry ids known to be malformed)."""
    entries = await bus.redis.xrange(stream)
    return [decode(fields) for entry_id, fields in entries if entry_id not in skip]


async def assert_ticks_stored_exactly_once(bus: Bus, db: asyncpg.Pool, injected: dict[str, set[str]]) -> None:
    expected = Counter(tick.id for tick in expected_ticks())
    published: Counter = Counter()
    for stream in tick_streams(PARTITIONS):
        published.update(event.id for event in await stream_events(bus, stream, injected.get(stream, set())))
    assert published == expected, "the feed published a tick twice or skipped one"
    stored = Counter(row["id"] for row in await db.fetch("SELECT id FROM ticks"))
    assert stored == expected, "a published tick was not stored exactly once"


async def assert_one_order_per_signal(bus: Bus, db: asyncpg.Pool) -> None:
    strategy = MovingAverageCrossover()
    expected = Counter(signal.id for tick in expected_ticks() for signal in strategy.on_tick(tick))
    published = Counter(event.id for event in await stream_events(bus, SIGNALS))
    assert published == expected, "signals differ from one uninterrupted strategy's over the same ticks"
    orders = Counter(event.id for event in await stream_events(bus, ORDERS_NEW))
    assert max(orders.values()) == 1, "an order was published twice"
    per_signal = await db.fetch(
        "SELECT s.id, count(o.id) AS orders FROM signals s LEFT JOIN orders o ON o.signal_id = s.id GROUP BY s.id"
    )
    assert Counter(row["id"] for row in per_signal) == expected
    assert {row["orders"] for row in per_signal} == {1}, "a signal has no order or more than one"
    assert await db.fetchval("SELECT count(*) FROM orders") == len(expected)


async def assert_no_order_filled_twice(bus: Bus, db: asyncpg.Pool, settings: Settings) -> None:
    orders: list[Order] = await stream_events(bus, ORDERS_NEW)  # type: ignore[assignment]
    events: list[OrderEvent] = await stream_events(bus, ORDER_EVENTS)  # type: ignore[assignment]
    assert Counter(event.client_order_id for event in events) == Counter(order.id for order in orders), (
        "an order got no event or more than one"
    )
    reference = PaperBroker(settings.starting_cash, settings.slippage_bps, settings.commission_per_share)
    assert events == [event for order in orders if (event := reference.execute(order)) is not None], (
        "the broker's events differ from one uninterrupted broker's over the same orders"
    )
    per_order = await db.fetch(
        "SELECT o.id, count(f.id) AS events, count(f.id) FILTER (WHERE f.status = 'filled') "
        "AS fills FROM orders o LEFT JOIN fills f ON f.client_order_id = o.id GROUP BY o.id"
    )
    assert {row["events"] for row in per_order} == {1}, "an order has no stored event or more than one"
    assert max(row["fills"] for row in per_order) == 1, "an order was filled twice"


async def assert_dead_letters_are_the_injected_entries(bus: Bus, injected: dict[str, set[str]]) -> None:
    dead: Counter = Counter()
    async for key in bus.redis.scan_iter(match=f"{DEAD_LETTER_PREFIX}*"):
        for _, record in await bus.redis.xrange(key):
            dead[(record["group"], record["stream"], record["entry_id"])] += 1
            assert json.loads(record["payload"]) in BAD_ENTRIES, f"dead-lettered a good entry: {record}"
    expected = Counter(
        {
            (group, stream, entry_id): 1
            for stream, ids in injected.items()
            for entry_id in ids
            for group in (STRATEGY_ROLE, STORAGE_GROUP)
        }
    )
    assert sum(len(ids) for ids in injected.values()) == len(BAD_ENTRIES)
    assert dead == expected, "the dead-letter streams do not hold exactly the injected entries, once per group"


def assert_outages_never_counted_against_good_entries(supervision: Supervision) -> None:
    """README: "transient failures never count as deliveries". Malformed entries never reach a handler
    (they fail decoding), so a handler error on a batch here means an outage was taken for a poison batch:
    its good entries were retried one by one, counted as failed, and moved toward the dead-letter stream."""
    logs = supervision.logs(tail_chars=10**7)
    poisoned = [line for line in logs.splitlines() if POISON_BATCH_WARNING in line]
    assert not poisoned, "an outage was treated as a poison batch:\n" + "\n".join(poisoned)
