"""Upgrading from the key layout before Redis Cluster support: drained streams, carried-over state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tradebot.common.bus import Bus
from tradebot.common.bus.wire import encode
from tradebot.common.config import SettingsError
from tradebot.common.layout import upgrade_key_layout
from tradebot.common.models import Tick
from tradebot.common.streams import EXECUTION_ROLE, STRATEGY_ROLE, TRADING_STATE_KEY, checkpoint_key

TICK = Tick.create("AAPL", 1.0, 1, datetime(2026, 1, 5, 14, 30, tzinfo=UTC), trade_id=1)


async def test_unread_entries_in_an_old_stream_stop_the_upgrade_with_one_line(bus: Bus) -> None:
    await bus.ensure_group("price.ticks:3", STRATEGY_ROLE)
    await bus.publish_raw("price.ticks:3", encode(TICK))
    with pytest.raises(SettingsError, match=r"unread entries in streams of the old key layout \(price\.ticks:3\)"):
        await upgrade_key_layout(bus.redis, 8)
    [delivery] = await bus.read(["price.ticks:3"], STRATEGY_ROLE, "c", count=10, block_ms=None)
    await bus.ack(STRATEGY_ROLE, [delivery])
    assert await upgrade_key_layout(bus.redis, 8) == []  # drained: the old stream may stay


async def test_state_keys_of_the_old_layout_are_carried_over_once(bus: Bus) -> None:
    await bus.redis.set("checkpoint:execution:0", '{"cash": 5}')
    await bus.redis.set("risk:trading_state", '{"state": "HALTED"}')
    await bus.redis.hset("checkpoint_parts:strategy:2", "AAPL", "{}")
    await bus.redis.hset("checkpoint_parts:execution:0", "_rest", "{}")
    renamed = await upgrade_key_layout(bus.redis, 8)
    assert sorted(renamed) == [
        "checkpoint:execution:0",
        "checkpoint_parts:execution:0",
        "checkpoint_parts:strategy:2",
        "risk:trading_state",
    ]
    assert await bus.redis.get(checkpoint_key(EXECUTION_ROLE, 0)) == '{"cash": 5}'
    assert await bus.redis.get(TRADING_STATE_KEY) == '{"state": "HALTED"}'
    assert await bus.redis.hgetall("checkpoint_parts:strategy:{2}") == {"AAPL": "{}"}
    assert await bus.redis.hgetall("checkpoint_parts:execution:{0}") == {"_rest": "{}"}
    await bus.redis.set("checkpoint:execution:0", "stale copy")  # never over a key of the new layout
    assert await upgrade_key_layout(bus.redis, 8) == []
    assert await bus.redis.get(checkpoint_key(EXECUTION_ROLE, 0)) == '{"cash": 5}'
