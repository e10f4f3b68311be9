"""Checkpoints that scale: a partition kept in parts (the strategy: one per symbol; the execution
account: one per symbol and per remembered order id) is committed part by part, so a commit rewrites
only what its batch changed, with the same atomicity."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tradebot.broker import checkpoint as account_parts
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import ControlEvent, Event, Order, OrderChange, OrderEvent, Tick
from tradebot.common.streams import (
    EXECUTION_ROLE,
    ORDER_EVENTS,
    ORDERS_NEW,
    STRATEGY_ROLE,
    checkpoint_key,
    checkpoint_parts_key,
    partition_for,
    signal_streams,
    tick_stream_for,
)
from tradebot.execution import service as execution
from tradebot.execution.account import read_account
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.strategy import parts as strategy_parts
from tradebot.strategy import service
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.strategy.moving_average import MovingAverageCrossover

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
PARTITIONS = 1
SYMBOLS = ["AAPL", "MSFT"]


def burst_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"symbols": SYMBOLS, "tick_partitions": PARTITIONS, "bus_batch_size": 16, "burst": True}
    )


async def run_burst(settings: Settings) -> None:
    await asyncio.wait_for(service.run(settings, stop=asyncio.Event(), counters=Counter()), timeout=60)


async def publish(bus: Bus, ticks: list[Tick]) -> None:
    await bus.publish((tick_stream_for(tick.symbol, PARTITIONS), tick) for tick in ticks)


async def test_a_commit_rewrites_only_the_symbols_its_batch_touched(bus: Bus, settings: Settings) -> None:
    ticks = MockFeed(SYMBOLS, 5, clock=stepping_clock(START)).take(400)
    await publish(bus, ticks[:200])
    await run_burst(burst_settings(settings))
    key = checkpoint_parts_key(STRATEGY_ROLE, partition_for("AAPL", PARTITIONS))
    parts = await bus.redis.hgetall(key)
    aapl, msft = part_of("AAPL", parts), part_of("MSFT", parts)  # one part per (symbol, strategy)
    assert {"_v", "_rest"} <= set(parts)
    untouched = parts[msft]
    await publish(bus, [tick for tick in ticks[200:] if tick.symbol == "AAPL"])
    await bus.redis.hset(key, msft, untouched.replace("{", "{ ", 1))  # a marker: same state, other bytes
    await run_burst(burst_settings(settings))
    after = await bus.redis.hgetall(key)
    assert after[msft] == untouched.replace("{", "{ ", 1)  # not rewritten: no MSFT tick in those batches
    assert after[aapl] != parts[aapl]


async def test_a_whole_string_checkpoint_of_an_older_version_is_taken_over(bus: Bus, settings: Settings) -> None:
    ticks = MockFeed(SYMBOLS, 9, clock=stepping_clock(START)).take(300)
    strategy = MovingAverageCrossover(settings.short_window, settings.long_window)
    expected = [signal for tick in ticks for signal in strategy.on_tick(tick)]
    old = MovingAverageCrossover(settings.short_window, settings.long_window)
    for tick in ticks[:150]:
        old.on_tick(tick)
    partition = partition_for("AAPL", PARTITIONS)
    await bus.redis.set(checkpoint_key(STRATEGY_ROLE, partition), json.dumps(old.snapshot()))
    await bus.ensure_group(tick_stream_for("AAPL", PARTITIONS), STRATEGY_ROLE)
    await bus.redis.xgroup_setid(tick_stream_for("AAPL", PARTITIONS), STRATEGY_ROLE, "$")  # the old run read these
    await publish(bus, ticks[150:])
    await run_burst(burst_settings(settings))
    signals = await bus.entries_of(signal_streams(PARTITIONS))
    assert sorted(s.id for s in signals) == sorted(s.id for s in expected if s.tick_id in {t.id for t in ticks[150:]})
    assert await bus.redis.hget(checkpoint_parts_key(STRATEGY_ROLE, partition), "_v") == "1"


def part_of(symbol: str, parts: dict[str, str]) -> str:
    """The name of the one part holding ``symbol`` (the default book has one strategy)."""
    [name] = [name for name in parts if name.startswith(f"{symbol}@")]
    return name


def crossover_book() -> StrategyBook:
    return StrategyBook([StrategySpec(None, "ma_crossover", {"short_window": 5, "long_window": 20})])


def test_a_symbol_part_keeps_its_recent_tick_ids_compactly_and_exactly() -> None:
    partition = service.StrategyPartition(crossover_book, 10.0)
    consecutive = MockFeed(["AAPL"], 1, clock=stepping_clock(START)).take(80)
    odd = [Tick.create("MSFT", 10.0, 1, START, source="alpaca", trade_id=trade) for trade in (7, 3, 9)]
    partition.apply(consecutive + odd)
    parts = partition.parts()
    packed = strategy_parts.decode_part(parts[part_of("AAPL", parts)])["recent_tick_ids"]
    assert packed == {"prefix": "mock:AAPL:", "first": 30, "count": 50}  # fifty ids as a range, not fifty strings
    restored = service.StrategyPartition(crossover_book, 10.0)
    restored.restore_parts(parts)
    assert json.loads(restored.checkpoint()) == json.loads(partition.checkpoint())  # the same state


def test_a_symbol_part_is_written_compactly_and_reads_back_exactly() -> None:
    """Abbreviated keys, whole-number windows as differences over their common divisor; old plain
    parts and states whose keys look like abbreviations read back exactly too."""
    partition = service.StrategyPartition(crossover_book, 10.0)
    partition.apply(MockFeed(["AAPL"], 1, clock=stepping_clock(START)).take(80))
    parts = partition.parts()
    part = parts[part_of("AAPL", parts)]
    plain = json.dumps(strategy_parts.decode_part(part), separators=(",", ":"))
    assert part.startswith("~")
    assert len(part) < 0.7 * len(plain)
    old = {**parts, part_of("AAPL", parts): plain}  # a part as the release before wrote it
    for saved in (parts, old):
        restored = service.StrategyPartition(crossover_book, 10.0)
        restored.restore_parts(saved)
        assert restored.checkpoint() == partition.checkpoint()
    for memory in ([1, 2, 3], [0, 0, 0], [-5, 10, -15, 20], [True, False, True], [1.0, 2.5, 3.0], [7, 7]):
        state = {"memory": {"window": memory}, "bar": None}
        again = strategy_parts.decode_part(
            strategy_parts.split({"strategies": {"s": {"symbols": {"A": state}}}}, None)[0]["A@s"]
        )
        assert again == state
        assert [type(x) for x in again["memory"]["window"]] == [type(x) for x in memory]
    odd = {"~d": [1, 2, 3], "memory": {}}
    assert (
        strategy_parts.decode_part(strategy_parts.split({"strategies": {"s": {"symbols": {"A": odd}}}}, None)[0]["A@s"])
        == odd
    )


# ----- the execution account ------------------------------------------------------------------------


def account_order(number: int, symbol: str, side: str, at: datetime) -> Order:
    """An order ``number`` seconds after ``at`` (the risk stage refuses repeats within a second)."""
    return Order(
        id=f"co-{number}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=1,
        reference_price=100.0 + number,
        signal_id=f"sig-{number}",
        timestamp=at + timedelta(seconds=2 * number),
    )


async def run_execution(settings: Settings) -> None:
    burst = settings.model_copy(update={"burst": True, "bus_batch_size": 4})
    await asyncio.wait_for(execution.run(burst, stop=asyncio.Event(), counters=Counter()), timeout=60)


async def test_the_account_is_committed_in_parts_and_old_order_ids_are_deleted(bus: Bus, settings: Settings) -> None:
    """A batch writes its symbols' parts and order ids only; an id older than ORDER_MEMORY_DAYS is
    deleted; the account restored from the parts is the one the worker had."""
    settings = settings.model_copy(update={"order_memory_days": 1.0})
    key = checkpoint_parts_key(EXECUTION_ROLE, 0)
    first = [account_order(n, "AAPL" if n % 2 else "MSFT", "buy", START) for n in range(8)]
    await bus.publish((ORDERS_NEW, order) for order in first)
    await run_execution(settings)
    parts = await bus.redis.hgetall(key)
    assert {"_v", "_rest", "p:AAPL", "p:MSFT"} <= set(parts)
    assert {name for name in parts if name.startswith("o:")} == {f"o:co-{n}" for n in range(8)}
    untouched = parts["p:MSFT"]
    await bus.redis.hset(key, "p:MSFT", untouched.replace("{", "{ ", 1))  # same state, other bytes

    later = START + timedelta(days=2)  # every earlier order id is past the age limit now
    await bus.publish([(ORDERS_NEW, account_order(8, "AAPL", "buy", later))])
    await run_execution(settings)
    after = await bus.redis.hgetall(key)
    assert after["p:MSFT"] == untouched.replace("{", "{ ", 1)  # not rewritten: no MSFT order since
    assert after["p:AAPL"] != parts["p:AAPL"]
    assert {name for name in after if name.startswith("o:")} == {"o:co-8"}

    whole = execution.BrokerPartition(settings)
    whole.restore_parts(after)
    account = await read_account(bus.redis)
    assert account is not None
    assert account["positions"]["AAPL"]["quantity"] == 5
    assert account["cash"] == whole.broker.account()["cash"]
    assert list(json.loads(whole.checkpoint())["seen_order_ids"]) == ["co-8"]


async def test_a_whole_string_account_of_an_older_version_is_taken_over(bus: Bus, settings: Settings) -> None:
    old = execution.BrokerPartition(settings)
    old.apply([account_order(0, "AAPL", "buy", START)])
    await bus.redis.set(checkpoint_key(EXECUTION_ROLE, 0), old.checkpoint())
    assert (await read_account(bus.redis) or {})["positions"]["AAPL"]["quantity"] == 1  # read before the takeover
    await bus.publish(
        [(ORDERS_NEW, account_order(0, "AAPL", "buy", START)), (ORDERS_NEW, account_order(1, "AAPL", "buy", START))]
    )
    await run_execution(settings)
    parts = await bus.redis.hgetall(checkpoint_parts_key(EXECUTION_ROLE, 0))
    assert parts["_v"] == "1"
    assert {name for name in parts if name.startswith("o:")} == {"o:co-0", "o:co-1"}
    account = await read_account(bus.redis)
    assert account is not None
    assert account["positions"]["AAPL"]["quantity"] == 2  # co-0 was not filled a second time


def test_account_parts_join_back_into_exactly_the_snapshot_they_were_split_from() -> None:
    partition = execution.BrokerPartition(Settings(_env_file=None))  # type: ignore[call-arg]
    symbols = ["AAPL", "NVDA", "MSFT", "AMD", "TSLA", "IBM"]
    # event times out of order (orders interleave partitions): every list must keep its own order
    partition.apply(
        [account_order(n, symbol, "buy", START) for n, symbol in zip([3, 0, 5, 1, 4, 2], symbols, strict=True)]
    )
    parts = partition.parts()
    assert {name for name in parts if name.startswith("d:")} == {f"d:co-{n}" for n in range(6)}
    again = execution.BrokerPartition(Settings(_env_file=None))  # type: ignore[call-arg]
    again.restore_parts(parts)
    assert again.checkpoint() == partition.checkpoint()
    assert again.changed_parts() == {}


# ----- the compact account parts (issue 14, third round) --------------------------------------------


def strategy_order(number: int, symbol: str, side: str, strategy: str) -> Order:
    """An order of ``strategy``, timestamps with microseconds (every step a different one); from
    the fifth on, prices go up and down (some sells lose)."""
    return Order(
        id=f"co-{number}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=2 if side == "buy" else 1,
        reference_price=100.0 + (number if number < 4 else number * 7 % 13),
        signal_id=f"sig-{number}",
        timestamp=START + timedelta(seconds=2 * number, microseconds=1234 * number),
        strategy=strategy,
    )


def costs(**more: object) -> Settings:
    """Settings with the paper costs OLD_PARTS were written with (not the defaults: those may change)."""
    return Settings(_env_file=None, slippage_bps=1.0, commission_per_share=0.005, **more)  # type: ignore[call-arg, arg-type]


# Parts the release before the compact layout wrote for strategy_order 0..3 (AAPL b buy, MSFT a
# buy, AAPL a buy, AAPL b sell), and the checkpoint of that account.
OLD_PARTS = {
    "s:0": "[1704205800.0,1704205802.001234,1704205804.002468,1704205806.003702]",
    "d:co-0": "1",
    "d:co-1": "2",
    "d:co-2": "3",
    "d:co-3": "4",
    "_rest": '{"starting_cash":100000.0,"cash":99496.8941,"commissions":0.034999999999999996,"resting":[],'
    '"marks":{},"pnl":{"b":{"AAPL":[1.0,100.015,2.9696999999999987]},"a":{"AAPL":[2.0,102.0152,0.0],'
    '"MSFT":[2.0,101.01509999999999,0.0]}},"risk":{"operator":["ACTIVE",0],"rule":null,'
    '"peak_equity":100003.9094,"session":["2024-01-02",100000.0],"stats":[1,0,1.969600000000014,0.0],'
    '"gaps":[],"windows":{"sends":4,"losses":[],"locked_until":0.0}}}',
    "_symbols": '["AAPL","MSFT"]',
    "p:AAPL": '{"position":{"quantity":3.0,"average_cost":101.01509999999999,"realised_pnl":1.969600000000014,'
    '"last_price":103.0},"mark":103.0,"sent":[1704205800.0,1704205804.002468,1704205806.003702],'
    '"last":{"buy":1704205804.002468,"sell":1704205806.003702}}',
    "p:MSFT": '{"position":{"quantity":2.0,"average_cost":101.01509999999999,"realised_pnl":0.0,'
    '"last_price":101.0},"mark":101.0,"sent":[1704205802.001234],"last":{"buy":1704205802.001234}}',
    "o:co-0": "1:1704205800.0",
    "o:co-1": "2:1704205802.001234",
    "o:co-2": "3:1704205804.002468",
    "o:co-3": "4:1704205806.003702",
}
FIRST_FOUR = [("AAPL", "buy", "b"), ("MSFT", "buy", "a"), ("AAPL", "buy", "a"), ("AAPL", "sell", "b")]


def traded(count: int) -> list[Order]:
    symbols = ["AAPL", "MSFT", "NVDA"]
    steps = [*FIRST_FOUR, *[(symbols[n % 3], "buy" if n % 4 else "sell", "ab"[n % 2]) for n in range(4, count)]]
    return [strategy_order(n, *step) for n, step in enumerate(steps[:count])]


def test_the_compact_account_parts_restore_exactly_and_decide_on_alike() -> None:
    """Cash, P&L per strategy, positions, rate windows (a cooldown too), decisions and order ids
    come back exactly from the compact parts; both accounts decide the next orders alike."""
    settings = costs(risk_cooldown_s=30.5)
    partition = execution.BrokerPartition(settings)
    orders = traded(40)
    partition.apply(orders[:30])
    parts = partition.parts()
    assert all(parts[name].startswith("~") for name in parts if name.startswith(("p:", "s:", "_cash")))
    assert json.loads(parts["_rest"])["pnl"] == {"b": {}, "a": {}}  # the strategies' order; holdings per symbol
    restored = execution.BrokerPartition(settings)
    restored.restore_parts(parts)
    assert json.loads(restored.checkpoint()) == json.loads(partition.checkpoint())
    assert json.loads(restored.checkpoint())["risk"]["windows"]["cooldown"]  # a losing close cooled a symbol
    assert restored.changed_parts() == {}
    assert restored.apply(orders[30:]) == partition.apply(orders[30:])
    assert restored.apply(orders[:5]) == partition.apply(orders[:5]) == []  # decided before: nothing
    assert json.loads(restored.checkpoint()) == json.loads(partition.checkpoint())
    assert ',"m":0,' in parts["p:AAPL"]  # the mark is the position's last price: derived, not written


def test_what_a_symbols_part_can_derive_is_not_written_and_comes_back() -> None:
    alone = execution.BrokerPartition(costs())
    orders = [strategy_order(n, "IBM", side, "solo") for n, side in enumerate(["buy", "buy", "sell"])]
    alone.apply(orders[:2])
    assert '"n":[[0,0]]' in alone.parts()["p:IBM"]  # one strategy holds the symbol: its holding is the position
    for _ in range(2):  # then the sell: the P&L's realised figure differs from the broker's in its last bits
        again = execution.BrokerPartition(costs())
        again.restore_parts(alone.parts())
        assert json.loads(again.checkpoint()) == json.loads(alone.checkpoint())
        alone.apply(orders[2:])
    assert '"n":[[0,[' in alone.parts()["p:IBM"]


def test_account_parts_of_the_release_before_read_exactly_and_are_rewritten_compactly() -> None:
    partition = execution.BrokerPartition(costs())
    partition.apply(traded(4))
    old = execution.BrokerPartition(costs())
    old.restore_parts(dict(OLD_PARTS))
    assert json.loads(old.checkpoint()) == json.loads(partition.checkpoint())
    rewritten = old.changed_parts()  # the first commit after a restore rewrites them compactly
    assert rewritten["p:AAPL"].startswith("~")
    assert rewritten["_cash"].startswith("~")
    assert "cash" not in json.loads(rewritten["_rest"])
    assert not {"o:co-0", "d:co-0"} & set(rewritten)  # written once: the same value in either layout
    again = execution.BrokerPartition(costs())
    again.restore_parts({**OLD_PARTS, **{name: value for name, value in rewritten.items() if value is not None}})
    assert json.loads(again.checkpoint()) == json.loads(partition.checkpoint())


def test_send_times_are_packed_only_when_they_read_back_as_the_same_floats() -> None:
    times = [1767623404.064, 1767623404.084, 1767623403.108, 1704205802.001234, 1767623404.064]
    packed = account_parts.pack_times(times)
    assert isinstance(packed, dict)
    assert len(json.dumps(packed)) < len(json.dumps(times))
    assert account_parts.unpack_times(json.loads(json.dumps(packed))) == times
    for odd in ([0.1 + 0.2, 1.0], [1767623404.064 + 30.3, 1.0], [1.0, math.inf], [1.0], [5, 6.0]):
        assert account_parts.pack_times(odd) == odd  # not whole microseconds (or not floats): as they are


async def test_an_order_id_redelivered_days_later_is_not_filled_twice(bus: Bus, settings: Settings) -> None:
    """Within ORDER_MEMORY_DAYS a client order id is never filled again, across restarts from the
    compact parts, however many orders came in between."""
    await bus.publish([(ORDERS_NEW, account_order(0, "AAPL", "buy", START))])
    await run_execution(settings)
    days_later = START + timedelta(days=6)
    await bus.publish((ORDERS_NEW, account_order(n, "MSFT", "buy", days_later)) for n in range(1, 6))
    await run_execution(settings)
    await bus.publish([(ORDERS_NEW, account_order(0, "AAPL", "buy", START))])  # it comes back
    await run_execution(settings)
    events = [e for e in await bus.entries(ORDER_EVENTS) if isinstance(e, OrderEvent)]
    assert [e.client_order_id for e in events if e.client_order_id == "co-0"] == ["co-0"]
    account = await read_account(bus.redis)
    assert account is not None
    assert account["positions"]["AAPL"]["quantity"] == 1
    parts = await bus.redis.hgetall(checkpoint_parts_key(EXECUTION_ROLE, 0))
    assert parts["p:AAPL"].startswith("~")
    assert "o:co-0" in parts


def test_commits_of_only_the_changed_account_parts_add_up_to_every_part() -> None:
    """Each commit writes what its batch changed (new order ids and decisions, the symbols whose
    state moved; None: a part to delete), never re-deriving the ids it keeps: the parts so committed,
    batch after batch, are exactly what a split of the whole account gives, forgotten ids gone."""
    settings = costs(order_memory_days=1)
    partition = execution.BrokerPartition(settings)
    symbols = ["AAPL", "MSFT", "NVDA", "AMD"]
    orders = [
        strategy_order(n, symbols[n % 4], "buy" if n % 3 else "sell", "ab"[n % 2]).model_copy(
            update={"timestamp": START + timedelta(hours=7 * n, microseconds=n)}
        )
        for n in range(24)
    ]
    stored = partition.parts()
    forgotten: set[str] = set()
    for start in range(0, len(orders), 5):
        partition.apply(orders[start : start + 5])
        changed = partition.changed_parts()
        forgotten |= {name for name, value in changed.items() if value is None and name.startswith("o:")}
        stored = {name: value for name, value in {**stored, **changed}.items() if value is not None}
    assert forgotten  # older than ORDER_MEMORY_DAYS: their parts deleted
    whole = execution.BrokerPartition(settings)
    whole.apply(orders)
    assert stored == whole.parts()
    again = execution.BrokerPartition(settings)
    again.restore_parts(stored)
    assert json.loads(again.checkpoint()) == json.loads(partition.checkpoint())


def test_the_minute_of_sends_is_committed_chunk_by_chunk_as_a_whole_split_writes_it() -> None:
    """Orders every 0.4 s for three minutes fill many chunks of sends and push the oldest out of
    the one-minute window: the chunks each commit writes (the split keeps what it encoded and
    encodes again only the chunks that changed) add up to exactly a whole split's, the chunks that
    left the window deleted."""
    settings = costs()
    partition = execution.BrokerPartition(settings)
    symbols = ["AAPL", "MSFT", "NVDA", "AMD", "TSLA"]
    orders = [
        strategy_order(n, symbols[n % 5], "buy" if n % 3 else "sell", "ab"[n % 2]).model_copy(
            update={"timestamp": START + timedelta(seconds=0.4 * n, microseconds=n)}
        )
        for n in range(450)
    ]
    stored = partition.parts()
    deleted: set[str] = set()
    most = 0
    for start in range(0, len(orders), 7):
        partition.apply(orders[start : start + 7])
        changed = partition.changed_parts()
        deleted |= {name for name, value in changed.items() if value is None and name.startswith("s:")}
        stored = {name: value for name, value in {**stored, **changed}.items() if value is not None}
        most = max(most, sum(name.startswith("s:") for name in stored))
    assert most > 3  # several chunks at once
    assert deleted  # and chunks gone with the window
    whole = execution.BrokerPartition(settings)
    whole.apply(orders)
    assert stored == whole.parts()


def test_ids_are_numbered_as_a_whole_diff_numbers_them_whatever_the_lists_did() -> None:
    """The numbering looks only at the ends of a list that grew at the end and lost ids at the
    front (the usual case), and diffs it whole otherwise: through random appends, drops from the
    front and, now and then, an id dropped from or added in the middle, every step's changes are
    exactly what diffing the whole list against the numbered ids gives."""
    rng = random.Random(5)
    ids: list[str] = []
    ordinals: account_parts.Ordinals = {}
    numbered: dict[str, int] = {}  # the reference: places given by a whole diff, in list order
    made = 0
    for _ in range(400):
        for _ in range(rng.randrange(4)):
            made += 1
            ids.append(f"id-{made}")
        del ids[: rng.randrange(3)]
        if ids and rng.random() < 0.1:
            del ids[rng.randrange(len(ids))]
        if ids and rng.random() < 0.1:
            made += 1
            ids.insert(rng.randrange(len(ids)), f"id-{made}")
        listed = ids if rng.random() < 0.5 else dict.fromkeys(ids, 1.0)
        expected = {account_parts.ORDER + i: None for i in numbered if i not in ids}
        numbered = {i: p for i, p in numbered.items() if i in ids}
        for order_id in ids:
            if order_id not in numbered:
                numbered[order_id] = max(numbered.values(), default=0) + 1
                expected[account_parts.ORDER + order_id] = str(numbered[order_id])
        changed: dict[str, str | None] = {}
        account_parts._numbered(account_parts.ORDER, listed, ordinals, changed, False, lambda place, _: str(place))
        assert changed == expected
        assert ordinals[account_parts.ORDER] == numbered


# ----- a commit that costs what its batch changed (ninth round) -------------------------------------


def random_account_events(rng: random.Random, count: int) -> list[Event]:
    """Market orders of three strategies (the third from halfway) over eight symbols, resting orders
    (gtc limits, trailing stops, brackets, oco), cancels and replaces of them, ticks that fill them,
    now and then a flatten: every 0.3 to 40 s of event time, so sends leave the minute and ids age."""
    symbols = ["AAPL", "MSFT", "NVDA", "AMD", "TSLA", "IBM", "KO", "PEP"]
    at, events, resting = START, [], []
    for n in range(count):
        at += timedelta(seconds=rng.choice([0.3, 0.7, 2.0, 40.0]), microseconds=n)
        symbol, kind, price = rng.choice(symbols), rng.random(), round(rng.uniform(95, 105), 2)
        strategies = "abc" if n > count // 2 else "ab"
        common: dict[str, Any] = {"id": f"co-{n}", "symbol": symbol, "signal_id": f"sig-{n}", "timestamp": at}
        common |= {"reference_price": price, "strategy": rng.choice(strategies)}
        if kind < 0.45:
            events.append(Order(side=rng.choice(["buy", "buy", "sell"]), quantity=rng.choice([1, 2, 3]), **common))
        elif kind < 0.6:
            shapes: list[dict[str, Any]] = [
                {"order_type": "limit", "limit_price": price - 1, "time_in_force": "gtc"},
                {"side": "sell", "order_type": "trailing_stop", "trail_price": 1.5, "time_in_force": "gtc"},
                {"order_type": "limit", "limit_price": price - 1, "time_in_force": "gtc", "order_class": "bracket",
                 "take_profit_price": price + 2, "stop_loss_price": price - 3},
                {"side": "sell", "order_class": "oco", "order_type": "limit", "limit_price": price + 2,
                 "take_profit_price": price + 2, "stop_loss_price": price - 2, "time_in_force": "gtc"},
            ]  # fmt: skip
            events.append(Order(**{"side": "buy", "quantity": 1, **common, **rng.choice(shapes)}))
            resting.append((f"co-{n}", symbol))
        elif kind < 0.68 and resting:
            target, of = resting.pop(rng.randrange(len(resting)))
            change = {"action": "cancel"} if rng.random() < 0.5 else {"action": "replace", "quantity": 2}
            events.append(OrderChange(id=f"ch-{n}", symbol=of, timestamp=at, target=target, **change))  # type: ignore[arg-type]
        elif kind < 0.98:
            events.append(Tick.create(symbol, price, 1, at, trade_id=n))
        else:
            flatten = {"action": "flatten", "state": "REDUCING", "actor": "test", "reason": "now", "version": n}
            events.append(ControlEvent(id=f"fl-{n}", timestamp=at, **flatten))  # type: ignore[arg-type]
    return events


def test_a_commit_splits_the_symbols_its_batch_touched_and_adds_up_to_a_whole_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit looks at the symbols its batch's events are of (and the chunks of sends that
    moved), the whole account only after a flatten or when a strategy is new: through random
    batches of every kind of event, the parts so committed are after every commit exactly a whole
    split of the account, a batch writes no part of a symbol it has no event of, and a restore
    from them gives the same account."""
    whole_splits: list[int] = []
    split_changed = account_parts.split_changed

    def counted(*args: Any, **kwargs: Any) -> Any:
        whole_splits.append(1)
        return split_changed(*args, **kwargs)

    monkeypatch.setattr(account_parts, "split_changed", counted)
    settings = costs(order_memory_days=0.01, risk_cooldown_s=30.0, risk_duplicate_window_s=0.0)
    rng = random.Random(16)
    events = random_account_events(rng, 1200)
    partition = execution.BrokerPartition(settings)
    stored = partition.parts()
    commits = flattens = start = 0
    while start < len(events):
        batch = events[start : start + rng.choice([1, 1, 2, 5, 12])]
        start += len(batch)
        strategies = list(partition.pnl.books)
        partition.apply(batch)
        whole_splits.clear()
        changed = partition.changed_parts()
        whole = len(whole_splits)
        commits, flattens = commits + 1, flattens + whole
        stored = {name: value for name, value in {**stored, **changed}.items() if value is not None}
        assert stored == account_parts.split(partition._snapshot(), copy.deepcopy(partition._ordinals))
        if not any(isinstance(event, ControlEvent) for event in batch):
            symbols = {name[len(account_parts.POSITION) :] for name in changed if name.startswith("p:")}
            assert symbols <= {event.symbol for event in batch}
            assert not whole or commits == 1 or list(partition.pnl.books) != strategies
    assert 0 < flattens < commits / 10  # the whole account after a flatten only (or with a new strategy)
    assert any(name.startswith(account_parts.SENT) for name in stored)
    assert any(name.startswith(account_parts.ORDER) for name in stored)
    again = execution.BrokerPartition(settings)
    again.restore_parts(dict(stored))
    assert json.loads(again.checkpoint()) == json.loads(partition.checkpoint())
