"""Start-up warnings when stored state disagrees with STARTING_CASH, the universe or TICK_PARTITIONS."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.streams import EXECUTION_ROLE, STORED_SETTINGS_KEY, checkpoint_key, producer_cursor_key
from tradebot.maintenance.drift import record_settings, stored_state_drift, warn_about_drift

POSITION = {"average_cost": 220.0, "realised_pnl": 0.0, "last_price": 221.0}
ACCOUNT = {
    "starting_cash": 100_000.0,
    "cash": 95_000.0,
    "commissions": 0.0,
    "positions": {
        "AAPL": {**POSITION, "quantity": 10},
        "TSLA": {**POSITION, "quantity": 5},
        "KO": {**POSITION, "quantity": 0},
    },
    "seen_order_ids": [],
}
CURSOR = {"produced": 3, "seed": 42, "paths": {s: {"count": 1, "price": 1.0} for s in ("AAPL", "MSFT", "TSLA", "KO")}}


async def _stored(bus: Bus, settings: Settings) -> None:
    await bus.redis.set(checkpoint_key(EXECUTION_ROLE, 0), json.dumps(ACCOUNT))
    await bus.redis.set(producer_cursor_key("mock"), json.dumps(CURSOR))
    await record_settings(bus.redis, settings)


async def test_matching_settings_give_no_warning(bus: Bus, settings: Settings) -> None:
    await _stored(bus, settings)
    same = settings.model_copy(update={"symbols": ["AAPL", "MSFT", "TSLA", "KO"]})
    assert await stored_state_drift(bus.redis, same, set(same.symbols)) == []


async def test_each_disagreement_names_its_setting(bus: Bus, settings: Settings) -> None:
    await _stored(bus, settings)
    changed = settings.model_copy(update={"starting_cash": 50_000.0, "mock_seed": 7, "tick_partitions": 4})
    found = await stored_state_drift(bus.redis, changed, {"AAPL", "MSFT"})
    assert len(found) == 5, found
    cash, held, seed, universe, partitions = found
    assert cash.startswith("STARTING_CASH is 50,000.00 but the stored paper account started with 100,000.00")
    assert held.startswith("SYMBOL_MODE/SYMBOLS leave out 1 symbols the stored paper account still holds (TSLA)")
    assert seed.startswith("MOCK_SEED is 7 but the stored mock feed was started with seed 42")
    assert universe.startswith("SYMBOL_MODE/SYMBOLS now trade 2 symbols; 2 earlier ones (KO, TSLA) are no longer fed")
    assert partitions.startswith(
        f"TICK_PARTITIONS is 4 but the stored streams were written with {settings.tick_partitions}"
    )


async def test_the_first_start_records_the_partitions_and_later_ones_keep_them(bus: Bus, settings: Settings) -> None:
    await record_settings(bus.redis, settings)
    await record_settings(bus.redis, settings.model_copy(update={"tick_partitions": 2}))
    assert json.loads(await bus.redis.get(STORED_SETTINGS_KEY)) == {"tick_partitions": settings.tick_partitions}


async def test_start_up_logs_one_warning_each_with_the_way_to_reset(
    bus: Bus, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await _stored(bus, settings)
    changed = settings.model_copy(update={"starting_cash": 50_000.0, "symbols": ["AAPL", "MSFT", "TSLA", "KO"]})
    with caplog.at_level(logging.WARNING, logger="tradebot.drift"):
        found = await asyncio.to_thread(warn_about_drift, changed)
    assert len(found) == 1
    [record] = caplog.records
    assert "STARTING_CASH is 50,000.00" in record.message
    assert "`tradebot reset`" in record.message
