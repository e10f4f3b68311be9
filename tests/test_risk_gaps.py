"""The data-gap rule: pure, then through the execution worker on real Redis with a recorded gap."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import ControlEvent, Order
from tradebot.common.streams import CONTROL_EVENTS, ORDER_EVENTS, ORDERS_NEW
from tradebot.execution import service as execution
from tradebot.market_data.gaps import GapClosed, GapRecords, OpenGap
from tradebot.risk import control
from tradebot.risk.gaps import MAX_AGE_S, DataGapRule
from tradebot.risk.state import TradingState

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def record(*symbols: str, ended: datetime = NOW, source: str = "alpaca") -> tuple[str, dict]:
    """A gap record exactly as a live feed commits it."""
    gap = OpenGap(ended - timedelta(seconds=30), ended, set(symbols), dropped=42)
    _, state = GapRecords(source).writes(GapClosed(gap, repair=None))
    ((key, raw),) = state.items()
    return key, json.loads(raw)


def test_a_gap_in_a_traded_symbol_trips_the_configured_state_once() -> None:
    rule = DataGapRule("reducing", traded=frozenset({"AAPL"}))
    records = dict([record("AAPL", "MSFT")])
    ((state, reason),) = rule.check(records, held=[], now=NOW)
    assert state is TradingState.REDUCING
    assert reason.startswith("data gap in AAPL: 42 live events of alpaca not published from 2026-03-02T14:59:30")
    assert reason.endswith("(RISK_DATA_GAP_STATE=reducing)")
    assert rule.check(records, held=[], now=NOW) == []  # once per gap


def test_a_gap_in_a_held_symbol_trips_even_when_no_strategy_trades_it() -> None:
    rule = DataGapRule("halted", traded=frozenset())
    ((state, reason),) = rule.check(dict([record("NVDA", "TSLA")]), held=["NVDA"], now=NOW)
    assert state is TradingState.HALTED
    assert reason.startswith("data gap in NVDA:")


def test_a_gap_in_a_symbol_neither_held_nor_traded_changes_nothing() -> None:
    rule = DataGapRule("halted", traded=frozenset({"AAPL"}))
    assert rule.check(dict([record("TSLA")]), held=["MSFT"], now=NOW) == []


def test_every_symbol_counts_without_a_strategies_file_and_off_switches_the_rule_off() -> None:
    assert DataGapRule("reducing", traded=None).check(dict([record("TSLA")]), held=[], now=NOW)
    assert DataGapRule("off", traded=None).check(dict([record("TSLA")]), held=["TSLA"], now=NOW) == []


def test_a_gap_older_than_a_day_when_first_seen_is_only_remembered() -> None:
    rule = DataGapRule("reducing")
    just_old = dict([record("AAPL", ended=NOW - timedelta(seconds=MAX_AGE_S + 1))])
    assert rule.check(just_old, held=["AAPL"], now=NOW) == []
    on_the_edge = dict([record("AAPL", ended=NOW - timedelta(seconds=MAX_AGE_S), source="polygon")])
    assert len(rule.check(on_the_edge, held=["AAPL"], now=NOW)) == 1


def test_the_memory_of_seen_gaps_survives_a_snapshot() -> None:
    rule = DataGapRule("reducing")
    records = dict([record("AAPL")])
    rule.check(records, held=[], now=NOW)
    restored = DataGapRule("reducing")
    restored.restore(rule.snapshot())
    assert restored.check(records, held=[], now=NOW) == []


def order(number: int, side: str = "buy", symbol: str = "AAPL") -> Order:
    return Order(
        id=f"co-{number}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=10,
        reference_price=100.0,
        signal_id=f"sig-{number}",
        timestamp=datetime.now(UTC) + timedelta(seconds=number),
    )


async def run_burst(bus: Bus, settings: Settings, *orders: Order) -> list:
    """Publish ``orders``, run the execution worker until drained; every order event so far."""
    await bus.publish((ORDERS_NEW, o) for o in orders)
    burst = settings.model_copy(update={"burst": True})
    await asyncio.wait_for(execution.run(burst, stop=asyncio.Event(), counters=Counter()), timeout=60)
    return [decode(fields) for _, fields in await bus.redis.xrange(ORDER_EVENTS)]


async def commit_gap(bus: Bus, *symbols: str) -> None:
    key, saved = record(*symbols, ended=datetime.now(UTC))
    await bus.redis.set(key, json.dumps(saved))


async def rule_events(bus: Bus) -> list[ControlEvent]:
    events = [decode(fields) for _, fields in await bus.redis.xrange(CONTROL_EVENTS)]
    return [e for e in events if isinstance(e, ControlEvent) and e.action == "rule"]


async def test_a_recorded_gap_turns_trading_reducing_until_the_operator_resumes(bus: Bus, settings: Settings) -> None:
    await commit_gap(bus, "AAPL")
    (denied,) = await run_burst(bus, settings, order(1))
    assert denied.status == "denied"
    assert denied.reason.startswith("reducing: trading is REDUCING (data gap in AAPL: 42 live events of alpaca")
    (rule,) = await rule_events(bus)
    assert (rule.state, rule.actor) == ("REDUCING", "risk:data_gap")
    status = await control.status(bus)
    assert (status["state"], status["rule"]["code"]) == ("REDUCING", "data_gap")

    await control.apply_action(bus, "resume", actor="test", reason="gap repaired, strategies caught up")
    events = await run_burst(bus, settings, order(2))  # a new process: the gap is remembered, not tripped again
    assert [e.status for e in events] == ["denied", "filled"]
    assert len(await rule_events(bus)) == 1
    assert (await control.status(bus))["state"] == "ACTIVE"


async def test_a_gap_in_a_held_symbol_no_strategy_trades_halts_when_so_set(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    strategies = tmp_path / "strategies.toml"
    strategies.write_text('[[strategy]]\nname = "msft"\nclass = "ma_crossover"\nsymbols = ["MSFT"]\n')
    halting = settings.model_copy(update={"risk_data_gap_state": "halted", "strategies_file": strategies})
    await run_burst(bus, halting, order(1))  # AAPL held from here on
    await commit_gap(bus, "NVDA")  # neither held nor traded
    events = await run_burst(bus, halting, order(2, symbol="MSFT"))
    assert [e.status for e in events] == ["filled", "filled"]
    await commit_gap(bus, "AAPL")
    events = await run_burst(bus, halting, order(3, side="sell"))
    assert events[-1].status == "denied"
    assert events[-1].reason.startswith("halted: trading is HALTED (data gap in AAPL:")
    assert [e.state for e in await rule_events(bus)] == ["HALTED"]
