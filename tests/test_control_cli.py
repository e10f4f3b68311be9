"""`tradebot halt|reduce|resume|flatten|status` against a real Redis."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from tradebot.cli import app
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.risk.state import TradingState
from tradebot.risk.store import read_record

runner = CliRunner()


async def invoke(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    env = {"REDIS_URL": settings.redis_url or "", "DATABASE_URL": settings.database_url or ""}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def test_halt_then_status_then_resume(bus: Bus, settings: Settings) -> None:
    halted = await invoke(settings, "halt", "--reason", "broker outage", "--actor", "ops")
    assert halted.exit_code == 0, halted.output
    assert "trading state HALTED (version 1, halt by ops: broker outage)" in halted.output
    status = await invoke(settings, "status")
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert shown["state"] == "HALTED"
    assert shown["operator"]["reason"] == "broker outage"
    resumed = await invoke(settings, "resume", "-r", "all clear")
    assert resumed.exit_code == 0
    assert "ACTIVE (version 2" in resumed.output
    assert (await read_record(bus.redis))[0].state is TradingState.ACTIVE


async def test_an_empty_reason_is_a_usage_error_and_changes_nothing(bus: Bus, settings: Settings) -> None:
    result = await invoke(settings, "reduce", "--reason", "")
    assert result.exit_code == 2
    assert "reason" in result.output
    assert (await read_record(bus.redis))[0].version == 0
