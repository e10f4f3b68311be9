"""The mock feed: seeded, realistic, partitioned by crc32, and resumable without gaps or repeats."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import pytest

from tests.helpers import tick_count, wait_until
from tests.worker_processes import worker_environment, worker_processes
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode_all, encode, entry_ms
from tradebot.common.config import Settings
from tradebot.common.models import Tick
from tradebot.common.streams import partition_for, producer_cursor_key, tick_stream, tick_streams
from tradebot.market_data.mock_feed import MockFeed, starting_price, step_for, stepping_clock
from tradebot.market_data.service import CURSOR_NAME, run_feed, ticks_per_batch
from tradebot.market_data.start_prices import STARTING_PRICES

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAPL", "MSFT", "NVDA", "ZZZQ"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def feed(seed: int = 7, symbols: list[str] = SYMBOLS) -> MockFeed:
    return MockFeed(symbols, seed, clock=stepping_clock(START))


def essence(ticks: list[Tick]) -> list[tuple[str, str, float, float]]:
    """What must not change across runs and restarts (timestamps come from the clock)."""
    return [(t.id, t.symbol, t.price, t.size) for t in ticks]


async def published_ticks(bus: Bus, partitions: int) -> dict[int, list[Tick]]:
    """Every tick in each partition stream, in stream order."""
    out = {}
    for partition, stream in enumerate(tick_streams(partitions)):
        out[partition] = [t for _, fields in await bus.redis.xrange(stream) for t in decode_all(fields)]
    return out


def test_the_same_seed_gives_the_same_ticks() -> None:
    assert feed().take(500) == feed().take(500)
    assert essence(feed(seed=8).take(50)) != essence(feed().take(50))


def test_adding_a_symbol_does_not_change_the_others() -> None:
    two = [t for t in feed(symbols=["AAPL", "MSFT"]).take(200) if t.symbol == "AAPL"]
    three = [t for t in feed(symbols=["AAPL", "MSFT", "NVDA"]).take(300) if t.symbol == "AAPL"]
    assert essence(two) == essence(three)


def test_every_shipped_symbol_starts_at_a_listed_price() -> None:
    lists = (files("tradebot.universe") / "lists").iterdir()
    shipped = {line.strip() for f in lists for line in f.read_text().splitlines() if line.strip()[:1].isalpha()}
    assert len(shipped) > 250
    assert shipped - STARTING_PRICES.keys() == set()
    assert (starting_price("T"), starting_price("VZ"), starting_price("AMAT")) == (23, 44, 175)


def test_prices_and_sizes_are_realistic() -> None:
    ticks = feed().take(4000)
    by_symbol: dict[str, list[Tick]] = {}
    for tick in ticks:
        by_symbol.setdefault(tick.symbol, []).append(tick)
    assert abs(by_symbol["AAPL"][0].price - 235) < 1
    assert abs(by_symbol["MSFT"][0].price - 423) < 2
    assert 20 <= starting_price("ZZZQ") <= 300
    assert starting_price("ZZZQ") == starting_price("ZZZQ")
    for symbol, series in by_symbol.items():
        prices = [t.price for t in series]
        assert all(p == round(p, 2) for p in prices)  # printed in cents
        assert max(prices) / min(prices) < 1.1, f"{symbol} moves far too much for 1000 one-second ticks"
        assert len(set(prices)) > 50, f"{symbol} barely moves"
    sizes = Counter("odd lot" if t.size < 100 else "round lot" for t in ticks)
    assert sizes["odd lot"] > 1000
    assert sizes["round lot"] > 1000
    assert all(1 <= t.size <= 5000 and t.size == int(t.size) for t in ticks)


def test_a_feed_built_from_the_cursor_continues_the_sequence() -> None:
    uninterrupted = feed().take(300)
    first = feed()
    head = first.take(131)
    resumed = MockFeed(SYMBOLS, 7, clock=stepping_clock(START), cursor=json.loads(json.dumps(first.cursor())))
    assert essence(head + resumed.take(169)) == essence(uninterrupted)


def test_a_cursor_of_the_older_layout_continues_the_sequence_too() -> None:
    uninterrupted = feed().take(300)
    first = feed()
    head = first.take(131)
    older = first.cursor()
    older["paths"] = {symbol: {"count": count, "price": price} for symbol, (count, price) in older["paths"].items()}
    resumed = MockFeed(SYMBOLS, 7, clock=stepping_clock(START), cursor=json.loads(json.dumps(older)))
    assert essence(head + resumed.take(169)) == essence(uninterrupted)


async def test_ticks_go_to_their_crc32_partition_in_order(bus: Bus, settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "symbols": SYMBOLS,
            "mock_seed": 7,
            "mock_max_ticks": 400,
            "tick_partitions": 3,
            "bus_batch_size": 64,
            "mock_ticks_per_second": 100,  # the mock clock's 10 ms per tick, as feed()'s
        }
    )
    await run_feed(bus, settings, stop=asyncio.Event(), counters=Counter(), clock=stepping_clock(START), pace=False)
    expected = feed().take(400)
    published = await published_ticks(bus, 3)
    for partition, ticks in published.items():
        assert ticks == [t for t in expected if partition_for(t.symbol, 3) == partition]
    assert sum(len(ticks) for ticks in published.values()) == 400


def test_batches_are_small_while_the_feed_keeps_up(settings: Settings) -> None:
    """Below 1,000 ticks/s 25 ticks, at most 50 ms apart; from 1,000/s on one batch every 10 ms, from
    5,000/s on every 5 ms; never past BUS_BATCH_SIZE (README, mock feed)."""
    expected = {3: 1, 100: 5, 500: 25, 999: 25, 1_000: 10, 4_999: 50, 5_000: 25, 20_000: 100, 50_000: 250, 200_000: 500}
    batches = {
        rate: ticks_per_batch(settings.model_copy(update={"mock_ticks_per_second": rate, "bus_batch_size": 500}))
        for rate in expected
    }
    assert batches == expected


async def test_no_tick_is_published_before_its_own_timestamp(bus: Bus, settings: Settings) -> None:
    """A tick stamped after the moment it reaches the stream would be a look-ahead (and would make
    every latency measured from it meaningless): each entry's id (Redis's clock at the XADD, in ms)
    is at or after the millisecond of every tick in it. The feed runs paced, on the real clock."""
    settings = settings.model_copy(
        update={
            "symbols": SYMBOLS,
            "mock_seed": 7,
            "mock_max_ticks": 300,
            "tick_partitions": 2,
            "mock_ticks_per_second": 2_000,  # 150 ms: batches of 25 ticks spanning 12.5 ms each
        }
    )
    await run_feed(bus, settings, stop=asyncio.Event(), counters=Counter())
    early = []
    checked = 0
    for stream in tick_streams(2):
        for entry_id, fields in await bus.redis.xrange(stream):
            published_ms = entry_ms(entry_id)
            for tick in decode_all(fields):
                checked += 1
                if (tick.timestamp - EPOCH) // timedelta(milliseconds=1) > published_ms:
                    early.append((tick.id, tick.timestamp.isoformat(), published_ms))
    assert checked == 300
    assert early == []


async def test_a_restarted_feed_continues_without_repeats_or_gaps(bus: Bus, settings: Settings) -> None:
    settings = settings.model_copy(
        update={"symbols": SYMBOLS, "mock_seed": 7, "tick_partitions": 2, "bus_batch_size": 50}
    )
    for limit in (120, 120, 330):  # the second run has nothing left to do
        limited = settings.model_copy(update={"mock_max_ticks": limit})
        await run_feed(bus, limited, stop=asyncio.Event(), counters=Counter(), pace=False)
    published = await published_ticks(bus, 2)
    expected = feed().take(330)
    for partition, ticks in published.items():
        assert essence(ticks) == essence([t for t in expected if partition_for(t.symbol, 2) == partition])


@pytest.mark.timeout(240)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_a_feed_killed_with_sigkill_resumes_exactly(bus: Bus, settings: Settings, tmp_path: Path) -> None:
    total, partitions = 30_000, 2
    env = worker_environment(
        settings,
        symbol_mode="custom",
        symbols=",".join(SYMBOLS),
        mock_seed=7,
        mock_max_ticks=total,
        mock_ticks_per_second=60_000,
        tick_partitions=partitions,
        bus_batch_size=500,
    )

    async def published() -> int:
        return await tick_count(bus.redis, tick_streams(partitions))

    with worker_processes(tmp_path / "logs") as workers:
        first = workers.start("tradebot.market_data.service", env)
        await wait_until(lambda: _more_than(published, 2_000), timeout=60, what="the feed to publish")
        workers.kill(first)
        killed_at = await published()
        assert killed_at < total, "the feed finished before it could be killed"
        second = workers.start("tradebot.market_data.service", env)
        await wait_until(lambda: second.poll() is not None, timeout=60, what="the restarted feed to finish")
        assert second.returncode == 0, workers.logs()
    cursor = json.loads(await bus.redis.get(producer_cursor_key(CURSOR_NAME)))
    assert cursor["produced"] == total
    expected = feed().take(total)
    for partition in range(partitions):
        rows = await bus.redis.xrange(tick_stream(partition))
        ticks = [t for _, fields in rows for t in decode_all(fields)]
        assert essence(ticks) == essence([t for t in expected if partition_for(t.symbol, partitions) == partition])


async def _more_than(count, threshold: int) -> bool:  # type: ignore[no-untyped-def]
    return await count() > threshold


async def test_two_feeds_at_once_never_publish_a_tick_twice(bus: Bus, settings: Settings, redis_url: str) -> None:
    from tradebot.common.bus.connection import connect

    settings = settings.model_copy(
        update={"symbols": SYMBOLS, "mock_seed": 7, "tick_partitions": 2, "bus_batch_size": 10, "mock_max_ticks": 600}
    )
    other_bus = Bus(connect(redis_url))
    counters = [Counter(), Counter()]
    await asyncio.gather(
        *(
            run_feed(b, settings, stop=asyncio.Event(), counters=c, pace=False)
            for b, c in zip((bus, other_bus), counters, strict=True)
        )
    )
    await other_bus.close()
    published = await published_ticks(bus, 2)
    expected = feed().take(600)
    for partition, ticks in published.items():
        assert essence(ticks) == essence([t for t in expected if partition_for(t.symbol, 2) == partition])
    assert counters[0]["published"] + counters[1]["published"] == 600


def test_a_tick_regenerated_from_an_older_cursor_is_byte_identical() -> None:
    original = feed()
    original.take(50)
    older_cursor = json.loads(json.dumps(original.cursor()))
    published = original.take(100)
    later = datetime(2031, 6, 1, tzinfo=UTC)  # the wall clock when the feed regenerates them
    regenerated = MockFeed(SYMBOLS, 7, clock=lambda: later, cursor=older_cursor).take(100)
    assert [encode(tick) for tick in regenerated] == [encode(tick) for tick in published]


def test_the_mock_clock_advances_with_the_cursor_and_keeps_going_at_a_new_rate() -> None:
    first = MockFeed(SYMBOLS, 7, clock=lambda: START, step=step_for(100))
    ticks = first.take(10)
    assert [t.timestamp for t in ticks] == [START + timedelta(milliseconds=10 * n) for n in range(10)]
    faster = MockFeed(SYMBOLS, 7, cursor=json.loads(json.dumps(first.cursor())), step=step_for(1000))
    later = faster.take(3)
    assert [t.timestamp for t in later] == [START + timedelta(milliseconds=100 + n) for n in range(3)]


async def test_a_feed_that_died_between_partition_commits_resumes_without_gaps_or_repeats(
    bus: Bus, settings: Settings
) -> None:
    from tradebot.common.bus.publishing import Commit
    from tradebot.common.streams import partition_cursor_key

    settings = settings.model_copy(
        update={"symbols": SYMBOLS, "mock_seed": 7, "tick_partitions": 2, "bus_batch_size": 50, "mock_max_ticks": 300}
    )
    ahead = feed()  # a run (batches of 75) that got partition 1's share of 75 ticks out, then died
    share = [(tick_stream(1), t) for t in ahead.take(75) if partition_for(t.symbol, 2) == 1]
    cursor = json.dumps(ahead.cursor())
    await bus.commit("", Commit(publish=share, state={partition_cursor_key(CURSOR_NAME, 1): cursor}))
    await run_feed(bus, settings, stop=asyncio.Event(), counters=Counter(), pace=False)
    expected = feed().take(300)
    for partition, ticks in (await published_ticks(bus, 2)).items():
        assert essence(ticks) == essence([t for t in expected if partition_for(t.symbol, 2) == partition])


async def test_a_feed_resumes_from_a_feed_wide_cursor_many_batches_behind_its_partitions(
    bus: Bus, settings: Settings
) -> None:
    """The feed-wide cursor is written only now and then; the partitions' cursors say how far each got.

    A restart from a feed-wide cursor several batches behind regenerates what came after it and
    publishes, per partition, only what that partition's cursor does not cover. A partition's
    cursor holds its count only, not the feed's whole position (that was ~P times the feed's
    cursor bytes in the append-only file, one copy per partition and batch).
    """
    from tradebot.common.streams import partition_cursor_key

    settings = settings.model_copy(
        update={"symbols": SYMBOLS, "mock_seed": 7, "tick_partitions": 2, "bus_batch_size": 10, "mock_max_ticks": 200}
    )
    first_batch = feed()
    first_batch.take(10)
    await run_feed(bus, settings, stop=asyncio.Event(), counters=Counter(), pace=False)
    for partition in range(2):
        assert json.loads(await bus.redis.get(partition_cursor_key(CURSOR_NAME, partition))) == {"produced": 200}
    # As if the run had died long before its next feed-wide cursor: that cursor is 19 batches behind.
    await bus.redis.set(producer_cursor_key(CURSOR_NAME), json.dumps(first_batch.cursor()))
    settings = settings.model_copy(update={"mock_max_ticks": 400})
    counters: Counter[str] = Counter()
    await run_feed(bus, settings, stop=asyncio.Event(), counters=counters, pace=False)
    assert counters["published"] == 200
    assert json.loads(await bus.redis.get(producer_cursor_key(CURSOR_NAME)))["produced"] == 400
    expected = feed().take(400)
    for partition, ticks in (await published_ticks(bus, 2)).items():
        assert essence(ticks) == essence([t for t in expected if partition_for(t.symbol, 2) == partition])


async def test_tick_batches_regenerated_after_redis_lost_a_partitions_last_writes_are_byte_identical(
    bus: Bus, settings: Settings
) -> None:
    """Redis lost partition 1's last commits (its entries and its cursor): the restarted feed
    regenerates those ticks and publishes them in the same entries, byte for byte."""
    from tradebot.common.streams import partition_cursor_key

    settings = settings.model_copy(
        update={"symbols": SYMBOLS, "mock_seed": 7, "tick_partitions": 2, "bus_batch_size": 40, "mock_max_ticks": 160}
    )
    await run_feed(bus, settings, stop=asyncio.Event(), counters=Counter(), pace=False)
    kept = await bus.redis.xlen(tick_stream(1))
    lost_cursor = await bus.redis.get(partition_cursor_key(CURSOR_NAME, 1))
    feed_wide = await bus.redis.get(producer_cursor_key(CURSOR_NAME))
    settings = settings.model_copy(update={"mock_max_ticks": 400})
    await run_feed(bus, settings, stop=asyncio.Event(), counters=Counter(), pace=False)
    published = {p: [fields for _, fields in await bus.redis.xrange(tick_stream(p))] for p in range(2)}
    assert any(len(decode_all(fields)) > 1 for fields in published[1])  # batches, not one tick each
    for entry_id, _ in (await bus.redis.xrange(tick_stream(1)))[kept:]:  # the lost writes
        await bus.redis.xdel(tick_stream(1), entry_id)
    await bus.redis.set(partition_cursor_key(CURSOR_NAME, 1), lost_cursor)
    await bus.redis.set(producer_cursor_key(CURSOR_NAME), feed_wide)
    counters: Counter[str] = Counter()
    await run_feed(bus, settings, stop=asyncio.Event(), counters=counters, pace=False)
    assert 0 < counters["published"] < 240  # partition 1's ticks after 160 only
    assert {p: [fields for _, fields in await bus.redis.xrange(tick_stream(p))] for p in range(2)} == published
