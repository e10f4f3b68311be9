"""`tradebot strategy new|list|enable|disable`."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import wait_until
from tradebot.cli import app
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.config import Settings
from tradebot.common.embedded import EmbeddedRedis
from tradebot.strategy.catalog import build_strategy
from tradebot.strategy.service import follow_switches

runner = CliRunner()


def test_new_writes_a_strategy_that_passes_its_own_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["strategy", "new", "my_trend", "--folder", str(tmp_path)])
    assert result.exit_code == 0, result.output
    monkeypatch.syspath_prepend(str(tmp_path))
    generated_test = importlib.import_module("test_my_trend")
    generated_test.test_it_buys_the_rise_and_sells_the_fall()
    strategy = build_strategy(f"{tmp_path / 'my_trend.py'}:MyTrend", "mine", {"window": 5})
    assert strategy.name == "mine"
    again = runner.invoke(app, ["strategy", "new", "my_trend", "--folder", str(tmp_path)])
    assert again.exit_code == 2
    assert "exists" in again.output
    bad = runner.invoke(app, ["strategy", "new", "Bad-Name", "--folder", str(tmp_path)])
    assert bad.exit_code == 2
    assert "snake_case" in bad.output
    sys.modules.pop("test_my_trend", None)


def test_switches_reach_a_running_worker(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "strategies.toml"
    path.write_text('[[strategy]]\nname = "cross"\nclass = "ma_crossover"\n')
    env = {"REDIS_URL": settings.redis_url or "", "STRATEGIES_FILE": str(path), "LOG_LEVEL": "WARNING"}

    async def scenario() -> dict[str, bool]:
        client = connect(settings.redis_url or "")
        await client.flushdb()
        bus = Bus(client)
        switches: dict[str, bool] = {}
        stop = asyncio.Event()
        follower = asyncio.create_task(follow_switches(bus, switches, stop))
        result = await asyncio.to_thread(runner.invoke, app, ["strategy", "disable", "cross"], env=env)
        assert result.exit_code == 0, result.output
        await wait_until(lambda: switches.get("cross") is False, timeout=30, what="the switch to reach the worker")
        listed = await asyncio.to_thread(runner.invoke, app, ["strategy", "list"], env=env)
        assert "cross" in listed.output
        assert "off" in listed.output
        stop.set()
        await follower
        await bus.close()
        return switches

    assert asyncio.run(scenario()) == {"cross": False}
    unknown = runner.invoke(app, ["strategy", "enable", "nope"], env=env)
    assert unknown.exit_code == 2
    assert "no strategy 'nope'" in unknown.output


def test_switches_still_reach_the_worker_after_a_redis_outage(
    private_redis: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "strategies.toml"
    path.write_text('[[strategy]]\nname = "cross"\nclass = "ma_crossover"\n')
    env = {"REDIS_URL": private_redis.url, "STRATEGIES_FILE": str(path), "LOG_LEVEL": "WARNING"}

    async def scenario() -> dict[str, bool]:
        bus = Bus(connect(private_redis.url))
        switches: dict[str, bool] = {}
        stop = asyncio.Event()
        follower = asyncio.create_task(follow_switches(bus, switches, stop))
        private_redis.stop()
        await wait_until(lambda: "strategy switches not refreshed" in caplog.text, what="a poll during the outage")
        private_redis.start()
        result = await asyncio.to_thread(runner.invoke, app, ["strategy", "disable", "cross"], env=env)
        assert result.exit_code == 0, result.output
        await wait_until(lambda: switches.get("cross") is False, what="the switch to reach the worker")
        stop.set()
        await follower
        await bus.close()
        return switches

    assert asyncio.run(scenario()) == {"cross": False}
