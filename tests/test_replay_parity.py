"""Parity: the live pipeline (real workers on the bus) and the backtester give identical signals,
orders and fills on the same stored ticks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backtest_helpers import mock_ticks, request
from tradebot.backtest.data import load_ticks
from tradebot.backtest.replay import ReplayError, differences, replay, with_redis_db
from tradebot.backtest.run import simulate
from tradebot.common.bus.connection import connect
from tradebot.common.config import Settings
from tradebot.common.db import create_pool
from tradebot.storage.schema import apply_migrations
from tradebot.storage.writer import write_events
from tradebot.strategy.service import strategy_specs

TICKS = mock_ticks(3000)
STRATEGIES = """
[[strategy]]
name = "cross"
class = "ma_crossover"
parameters = { short_window = 5, long_window = 20 }
sizing = { quantity = 10 }

[[strategy]]
name = "cross_ema_1m"
class = "ma_crossover"
parameters = { short_window = 3, long_window = 8, average = "ema", timeframe = "1m" }
sizing = { notional = 2000 }

[[strategy]]
name = "reversion"
class = "rsi_reversion"
symbols = ["AAPL", "NVDA"]
parameters = { timeframe = "tick" }
sizing = { quantity = 5 }
"""


@pytest.fixture
def replay_settings(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "strategies.toml"
    path.write_text(STRATEGIES)
    return settings.model_copy(update={"strategies_file": path, "tick_partitions": 4, "bus_batch_size": 50})


async def test_replayed_workers_and_the_backtester_agree(replay_settings: Settings, clean_database: str) -> None:
    await apply_migrations(clean_database)
    pool = await create_pool(clean_database, max_size=2)
    try:
        await write_events(pool, TICKS)
        # the live risk stage too: the backtest runs the execution worker's own BrokerPartition
        wanted = request(tuple(strategy_specs(replay_settings)), risk=replay_settings)
        stored = await load_ticks(pool, wanted.symbols, wanted.start, wanted.end)
    finally:
        await pool.close()
    tested = simulate(wanted, stored).result
    replayed = await replay(replay_settings, stored, database=2, flush=True)
    assert len(tested.signals) > 100
    assert {s.strategy for s in tested.signals} == {"cross", "cross_ema_1m", "reversion"}
    # long only by the strategies' own orders: no sell of what is not held reaches the risk stage
    assert {e.status for e in tested.events} == {"filled"}
    assert differences(replayed, tested.signals, tested.orders, tested.events) == []
    # and in detail: the very same models, not just the same counts
    assert sorted(replayed.signals, key=lambda s: s.id) == sorted(tested.signals, key=lambda s: s.id)
    assert sorted(replayed.events, key=lambda e: e.id) == sorted(tested.events, key=lambda e: e.id)


async def test_a_replay_needs_an_empty_database_of_its_own(replay_settings: Settings) -> None:
    assert replay_settings.redis_url
    client = connect(with_redis_db(replay_settings.redis_url, 3))
    try:
        await client.set("something", "else")
        with pytest.raises(ReplayError, match="Redis database 3 is not empty"):
            await replay(replay_settings, TICKS[:10], database=3)
    finally:
        await client.flushdb()
        await client.aclose()


def test_the_namespace_is_another_logical_database() -> None:
    assert with_redis_db("redis://127.0.0.1:6390/0", 1) == "redis://127.0.0.1:6390/1"
    assert with_redis_db("redis://:secret@host:6379", 2) == "redis://:secret@host:6379/2"


RESTING = """
[[strategy]]
name = "bracketed"
class = "ma_crossover"
parameters = { short_window = 5, long_window = 20 }
sizing = { quantity = 10 }
orders = { take_profit_pct = 0.1, stop_loss_pct = 0.03 }

[[strategy]]
name = "trailed"
class = "rsi_reversion"
symbols = ["AAPL", "NVDA"]
parameters = { timeframe = "tick" }
sizing = { quantity = 5 }
orders = { trail_percent = 0.05 }
"""


async def test_the_backtester_fills_trailing_stops_and_brackets_on_the_tick_the_live_workers_do(
    replay_settings: Settings, tmp_path: Path
) -> None:
    # brackets (their legs rest after the entry fills) and trailing-stop exits, judged by the live
    # execution worker on the ticks it reads from price.ticks:{p} and by the backtester in its tick loop
    path = tmp_path / "resting.toml"
    path.write_text(RESTING)
    resting_settings = replay_settings.model_copy(update={"strategies_file": path})
    wanted = request(tuple(strategy_specs(resting_settings)), risk=resting_settings)
    tested = simulate(wanted, TICKS).result
    replayed = await replay(resting_settings, TICKS, database=4, flush=True)
    legs = [e for e in tested.events if e.status == "filled" and e.client_order_id.endswith(("-tp", "-sl"))]
    trailed = {o.id for o in tested.orders if o.order_type == "trailing_stop"}
    assert {e.client_order_id[-3:] for e in legs} == {"-tp", "-sl"}  # both legs filled somewhere
    assert [e for e in tested.events if e.status == "filled" and e.client_order_id in trailed]
    assert differences(replayed, tested.signals, tested.orders, tested.events) == []
    assert sorted(replayed.events, key=lambda e: e.id) == sorted(tested.events, key=lambda e: e.id)
