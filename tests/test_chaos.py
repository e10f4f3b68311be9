"""The chaos suite (``pytest -m chaos``): the reliability claims, proven under faults.

During a 100,000-tick run of the whole pipeline (mock feed, strategy ×2, execution, storage ×2
under a real `tradebot up`), ten random workers are killed with SIGKILL (each is restarted by the
supervisor), Redis rewrites its append-only file and is then restarted once (SIGTERM) and killed
once (SIGKILL: it may lose up to a second of acknowledged writes, ``appendfsync everysec``),
PostgreSQL is stopped for 15 s, the supervisor itself is killed with SIGKILL (every worker must
stop, each within its GRACE_PERIOD_S; it is then started again), and malformed entries are injected into the tick
streams. Afterwards every published tick, signal, order and fill is stored exactly once, every
signal produced exactly one order, no order was filled twice, the paper account equals the
account rebuilt from the stored fills, and the dead-letter streams hold exactly the injected
entries.

What Redis loses when killed is regenerated, not doubled: the feed's ticks are a pure function of
its cursor (clock included), the strategy's signals of its checkpoint and ticks, the broker's events
of its checkpoint and orders, so a regenerated event is byte-identical to the stored one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

import asyncpg
import pytest

from tests.chaos_helpers import (
    BAD_ENTRIES,
    ChaosServers,
    UpSupervision,
    chaos_servers,
    fault_schedule,
    inject_bad_entry,
    through_outages,
)
from tests.helpers import stream_lengths, wait_until
from tests.redis_cluster import CLUSTER_MARK, LocalCluster, connect_to
from tests.redis_versions import use_redis
from tests.up_process import UpProcess
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.wire import decode_all
from tradebot.common.config import Settings
from tradebot.common.models import Event, Order, OrderEvent, Tick
from tradebot.common.streams import (
    DEAD_LETTER_PREFIX,
    EXECUTION_ROLE,
    ORDER_EVENTS,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    lease_key,
    members_key,
    order_streams,
    producer_cursor_key,
    signal_streams,
    storage_streams,
    tick_stream,
    tick_streams,
)
from tradebot.execution.account import read_account
from tradebot.execution.service import BrokerPartition
from tradebot.market_data.mock_feed import MockFeed
from tradebot.market_data.service import CURSOR_NAME
from tradebot.storage.schema import migrate
from tradebot.strategy.service import book_factory

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
POSTGRES_OUTAGE_S = 15.0
# A group that never reads: retention follows the consumers, so it keeps every entry of the streams
# the checks read back in full (the feed's whole sequence, every signal, order and event).
KEEPER_GROUP = "chaos-keeper"
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


def supervised_pipeline(settings: Settings, folder: Path) -> UpSupervision:
    """`tradebot up` on the suite's servers with the chaos settings in its environment."""
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
        "redis_cluster",
        "redis_min_replicas",
    )
    overrides = {name.upper(): str(getattr(settings, name)) for name in names}
    overrides |= {"SYMBOLS": ",".join(SYMBOLS), "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url}
    up = UpProcess(folder / "data", settings=overrides)  # type: ignore[arg-type]
    return UpSupervision(up, SCALE, random.Random(SEED))


def server_actions(servers: ChaosServers) -> dict[str, Callable[[], None]]:
    """What each server fault of the schedule does to one Redis and the PostgreSQL."""
    return {
        "redis_rewrite": servers.rewrite_aof,
        "redis_restart": servers.restart_redis,
        "redis_kill": servers.kill_redis,
        "postgres_stop": servers.postgres.stop,
        "postgres_start": servers.postgres.start,
    }


async def run_faults(
    actions: Mapping[str, Callable[[], None]], supervision: UpSupervision, bus: Bus
) -> dict[str, set[str]]:
    """Play the fault schedule from the feed's first tick; returns the injected bad entry ids per tick stream.

    On a busy machine `tradebot up` takes many seconds to start its workers: a clock started
    before that would restart Redis under an idle pipeline."""
    await wait_until(lambda: _feed_started(bus), timeout=120, what="the feed's first ticks")
    began = time.monotonic()
    injected: dict[str, set[str]] = {}
    bad_entries = iter(BAD_ENTRIES)
    schedule = fault_schedule(KILLS, len(BAD_ENTRIES), TICKS / TICKS_PER_SECOND, POSTGRES_OUTAGE_S)
    for n, fault in enumerate(schedule):
        await asyncio.sleep(max(0.0, began + fault.at_s - time.monotonic()))  # the fault's moment, not a wait
        if fault.kind == "kill":
            await supervision.kill_random_worker()
        elif fault.kind == "bad":
            stream = tick_stream(n % PARTITIONS)
            injected.setdefault(stream, set()).add(await inject_bad_entry(bus, stream, next(bad_entries)))
        elif fault.kind == "supervisor_kill":
            await supervision.kill_supervisor()
        else:
            await asyncio.to_thread(actions[fault.kind])
        log.warning("chaos: %s at %.0f s", fault.kind, time.monotonic() - began)
    return injected


async def _feed_started(bus: Bus) -> bool:
    cursor = await through_outages(lambda: bus.redis.get(producer_cursor_key(CURSOR_NAME)))
    return bool(cursor) and json.loads(cursor)["produced"] > 0


NOT_YET: list[str] = ["not checked yet"]  # why the pipeline is not done, for the timeout's message


async def everything_done(bus: Bus, db: asyncpg.Pool) -> bool:
    """The feed finished, every group drained, and every stream's events are in the database."""
    cursor = await through_outages(lambda: bus.redis.get(producer_cursor_key(CURSOR_NAME)))
    if not cursor or json.loads(cursor)["produced"] < TICKS or await _count(db, "ticks") < TICKS:
        NOT_YET[0] = f"ticks: cursor {cursor and json.loads(cursor)['produced']}, stored {await _count(db, 'ticks')}"
        return False
    for streams, group in (
        (tick_streams(PARTITIONS), STRATEGY_ROLE),
        (order_streams(PARTITIONS), EXECUTION_ROLE),
        (storage_streams(PARTITIONS), STORAGE_GROUP),
    ):
        backlog = await through_outages(lambda s=streams, g=group: bus.backlog(s, g))
        if backlog:
            NOT_YET[0] = f"group {group} has a backlog of {backlog}"
            return False
    for streams, table in (
        (signal_streams(PARTITIONS), "signals"),
        (order_streams(PARTITIONS), "orders"),
        ([ORDER_EVENTS], "fills"),
    ):
        length, rows = await stream_lengths(bus.redis, streams), await _count(db, table)
        if length != rows:
            NOT_YET[0] = f"{streams[0]}… hold {length} entries, {table} {rows} rows"
            return False
    return True


async def group_state(bus: Bus, settings: Settings) -> str:
    """What Redis says about every tick stream's strategy group, its leases and members (for a timeout)."""
    lines = [f"members: {await bus.redis.zrange(members_key(STRATEGY_ROLE), 0, -1, withscores=True)}"]
    for partition in range(settings.tick_partitions):
        stream = tick_stream(partition)
        lease = lease_key(STRATEGY_ROLE, partition)
        lines.append(
            f"{stream}: length {await bus.redis.xlen(stream)}, last id {await bus.tails([stream])}, "
            f"lease {await bus.redis.get(lease)} (ttl {await bus.redis.pttl(lease)} ms), "
            f"info {await _stream_info(bus, stream)}"
        )
        for group in await bus.redis.xinfo_groups(stream):
            lines.append(f"  group {group}")
            if group["name"] == STRATEGY_ROLE:
                lines.append(f"  consumers {await bus.redis.xinfo_consumers(stream, STRATEGY_ROLE)}")
                lines.append(f"  pending {await bus.redis.xpending(stream, STRATEGY_ROLE)}")
    return "\n".join(lines)


async def _stream_info(bus: Bus, stream: str) -> dict[str, object]:
    info = await bus.redis.xinfo_stream(stream)
    return {name: value for name, value in info.items() if name not in ("first-entry", "last-entry")}


async def _count(db: asyncpg.Pool, table: str) -> int:
    try:
        return await db.fetchval(f"SELECT count(*) FROM {table}")
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
        return -1  # PostgreSQL is being restarted


async def test_every_effect_happens_exactly_once_through_kills_and_server_restarts(
    tmp_path: Path, redis_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_redis(redis_version, monkeypatch)  # once on Redis 6.2, once on Redis 7
    # Outside pytest's folder: another pytest run closes that to other users, PostgreSQL's among them.
    with tempfile.TemporaryDirectory(prefix="tradebot-chaos-") as folder, chaos_servers(Path(folder)) as servers:
        settings = chaos_settings(servers, tmp_path)
        await chaos_run(settings, Bus(connect(settings.redis_url or "")), server_actions(servers), tmp_path)


@pytest.mark.timeout(600)
async def test_on_a_redis_cluster_every_effect_happens_exactly_once_through_kills_and_a_failover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same run and checks on a local Redis Cluster (3 masters, 3 replicas) with
    REDIS_MIN_REPLICAS=1: the Redis faults become one master killed with -9 (its replica is promoted,
    and the killed node is started again: it rejoins as the new master's replica)."""
    use_redis("7", monkeypatch)
    with tempfile.TemporaryDirectory(prefix="tradebot-chaos-") as folder, chaos_servers(Path(folder)) as servers:
        cluster = LocalCluster(Path(folder) / "cluster")
        try:
            cluster.start()
            update = {
                "redis_url": cluster.url.removesuffix(CLUSTER_MARK),
                "redis_cluster": True,
                "redis_min_replicas": 1,
            }
            settings = chaos_settings(servers, tmp_path).model_copy(update=update)

            def fail_over() -> None:
                victim = cluster.master_of(tick_stream(0))
                victim.kill()
                LocalCluster._wait(lambda: cluster.master_of(tick_stream(0)) is not victim, "a replica promoted")
                victim.restart()
                LocalCluster._wait(cluster.ready, "the killed node back as a replica in sync")

            actions = {**server_actions(servers), "redis_rewrite": _nothing, "redis_restart": _nothing}
            await chaos_run(settings, Bus(connect_to(cluster.url)), {**actions, "redis_kill": fail_over}, tmp_path)
        finally:
            cluster.stop()


def _nothing() -> None:
    """A fault of one Redis without a counterpart on the cluster run (its AOF rewrite, its restart)."""


async def chaos_run(settings: Settings, bus: Bus, actions: Mapping[str, Callable[[], None]], tmp_path: Path) -> None:
    """The supervised pipeline through the fault schedule, drained, then every check."""
    started = time.monotonic()
    await asyncio.to_thread(migrate, settings.database_url or "")
    for stream in storage_streams(PARTITIONS):  # the checks read every stream afterwards: a group
        await bus.ensure_group(stream, KEEPER_GROUP)  # that never reads holds back retention
    db = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=2)  # no reconnect noise
    for stream in [
        *tick_streams(PARTITIONS),
        *signal_streams(PARTITIONS),
        *order_streams(PARTITIONS),
        ORDER_EVENTS,
    ]:
        await bus.ensure_group(stream, KEEPER_GROUP)  # retention then keeps every entry for the checks
    supervision = supervised_pipeline(settings, tmp_path)
    supervision.start()
    try:
        injected = await run_faults(actions, supervision, bus)
        try:
            await wait_until(lambda: everything_done(bus, db), timeout=DRAIN_TIMEOUT_S, what="the pipeline to drain")
        except AssertionError as error:
            state = await through_outages(lambda: group_state(bus, settings))
            raise AssertionError(f"{error} (last: {NOT_YET[0]})\n{state}\n{supervision.logs()[-3000:]}") from None
    finally:
        supervision.stop()
    log.warning(
        "chaos run: kills %s, supervisor kills %d, %.0f s",
        dict(supervision.kills),
        supervision.supervisor_kills,
        time.monotonic() - started,
    )
    assert sum(supervision.kills.values()) == KILLS
    assert supervision.supervisor_kills == 1
    try:
        await assert_ticks_stored_exactly_once(bus, db, injected)
        await assert_one_order_per_signal(bus, db)
        await assert_no_order_filled_twice(bus, db, settings)
        await assert_account_equals_the_stored_fills(bus, db)
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
    """The feed's sequence by id and content: a pure function of seed, symbols and position."""
    return MockFeed(SYMBOLS, SEED).take(TICKS)


async def stream_events(
    bus: Bus, streams: str | list[str], skip: set[str] | frozenset[str] = frozenset()
) -> list[Event]:
    """Every event of a stream (or of streams, one after another) in order (``skip``: entry ids known
    to be malformed)."""
    events = []
    for stream in [streams] if isinstance(streams, str) else streams:
        entries = await bus.redis.xrange(stream)
        events += [event for entry_id, fields in entries if entry_id not in skip for event in decode_all(fields)]
    return events


async def assert_ticks_stored_exactly_once(bus: Bus, db: asyncpg.Pool, injected: dict[str, set[str]]) -> None:
    expected = Counter(tick.id for tick in expected_ticks())
    published: Counter = Counter()
    for stream in tick_streams(PARTITIONS):
        published.update(event.id for event in await stream_events(bus, stream, injected.get(stream, set())))
    assert published == expected, "the feed published a tick twice or skipped one"
    stored = Counter(row["id"] for row in await db.fetch("SELECT id FROM ticks"))
    assert stored == expected, "a published tick was not stored exactly once"
    published_rows = set()
    for stream in tick_streams(PARTITIONS):
        events = await stream_events(bus, stream, injected.get(stream, set()))
        published_rows |= {(t.id, t.timestamp, t.price, t.size) for t in events}  # type: ignore[attr-defined]
    stored_rows = {tuple(row) for row in await db.fetch("SELECT id, ts, price, size FROM ticks")}
    assert stored_rows == published_rows, "a stored tick differs from the one on the stream (regenerated differently)"
    for table in ("signals", "orders", "fills"):
        rows, ids = await db.fetchrow(f"SELECT count(*), count(DISTINCT id) FROM {table}")
        assert rows == ids, f"{table}: {rows} rows for {ids} ids (an event stored twice under another key)"


async def assert_one_order_per_signal(bus: Bus, db: asyncpg.Pool) -> None:
    # One uninterrupted book of the default strategy: long only by its own orders, so a signal has
    # the one order the book sent for it, or none (a SELL while flat, a BUY while long).
    book = book_factory(Settings(_env_file=None))()
    decided = [output for tick in expected_ticks() for output in book.on_tick(tick)]
    expected = Counter(signal.id for signal, _ in decided)
    with_order = {signal.id for signal, order in decided if order is not None}
    published = Counter(event.id for event in await stream_events(bus, signal_streams(PARTITIONS)))
    assert published == expected, "signals differ from one uninterrupted strategy's over the same ticks"
    orders = Counter(event.id for event in await stream_events(bus, order_streams(PARTITIONS)))
    assert max(orders.values()) == 1, "an order was published twice"
    per_signal = await db.fetch(
        "SELECT s.id, count(o.id) AS orders FROM signals s LEFT JOIN orders o ON o.signal_id = s.id GROUP BY s.id"
    )
    assert Counter(row["id"] for row in per_signal) == expected
    assert {row["id"]: row["orders"] for row in per_signal} == {
        signal: int(signal in with_order) for signal in expected
    }, "a signal has another number of orders than the uninterrupted book's (0 or 1)"
    assert await db.fetchval("SELECT count(*) FROM orders") == len(with_order)


async def assert_no_order_filled_twice(bus: Bus, db: asyncpg.Pool, settings: Settings) -> None:
    orders: list[Order] = await stream_events(bus, order_streams(PARTITIONS))  # type: ignore[assignment]
    events: list[OrderEvent] = await stream_events(bus, ORDER_EVENTS)  # type: ignore[assignment]
    assert Counter(event.client_order_id for event in events) == Counter(order.id for order in orders), (
        "an order got no event or more than one"
    )
    # Execution reads every partition's orders stream, so the order it took them in is the order of
    # their events (one each, checked above); the replay takes them in that order.
    taken = {event.client_order_id: place for place, event in enumerate(events)}
    orders.sort(key=lambda order: taken[order.id])
    replay = BrokerPartition(settings)  # the same risk stage and broker, uninterrupted, in one batch
    assert events == [event for _, event in replay.apply(orders)], (
        "the execution role's events differ from one uninterrupted replay's over the same orders"
    )
    per_order = await db.fetch(
        "SELECT o.id, count(f.id) AS events, count(f.id) FILTER (WHERE f.status = 'filled') "
        "AS fills FROM orders o LEFT JOIN fills f ON f.client_order_id = o.id GROUP BY o.id"
    )
    assert {row["events"] for row in per_order} == {1}, "an order has no stored event or more than one"
    assert max(row["fills"] for row in per_order) == 1, "an order was filled twice"


async def assert_account_equals_the_stored_fills(bus: Bus, db: asyncpg.Pool) -> None:
    """Cash and positions of the paper account are what the stored fills add up to."""
    account = await read_account(bus.redis)
    assert account is not None
    cash = account["starting_cash"]
    positions: Counter = Counter()
    for fill in await db.fetch("SELECT symbol, side, quantity, price, commission FROM fills WHERE status = 'filled'"):
        signed = fill["quantity"] if fill["side"] == "buy" else -fill["quantity"]
        cash -= signed * fill["price"] + fill["commission"]
        positions[fill["symbol"]] += signed
    assert account["cash"] == pytest.approx(cash, abs=1e-6)
    held = {symbol: p["quantity"] for symbol, p in account["positions"].items() if p["quantity"]}
    assert held == pytest.approx({symbol: quantity for symbol, quantity in positions.items() if quantity})


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


def assert_outages_never_counted_against_good_entries(supervision: UpSupervision) -> None:
    """README: "transient failures never count as deliveries". Malformed entries never reach a handler
    (they fail decoding), so a handler error on a batch here means an outage was taken for a poison batch:
    its good entries were retried one by one, counted as failed, and moved toward the dead-letter stream."""
    logs = supervision.logs(tail_chars=10**7)
    poisoned = [line for line in logs.splitlines() if POISON_BATCH_WARNING in line]
    assert not poisoned, "an outage was treated as a poison batch:\n" + "\n".join(poisoned)
