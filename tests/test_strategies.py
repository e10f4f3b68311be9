"""The shipped indicator strategies on known series: where they buy and sell, and why."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from tradebot.common.models import Bar, Tick
from tradebot.strategy.catalog import BUILT_IN, StrategyError, build_strategy
from tradebot.strategy.ensemble import WeightedEnsemble
from tradebot.strategy.mean_reversion import RSIReversion
from tradebot.strategy.trend import MACDTrend

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
# flat, a steady fall of 10 dollars, a steady rise of 20, a fall of 10
DOWN_UP_DOWN = ([100.0] * 20 + [100 - 0.5 * i for i in range(1, 21)] + [90 + 0.5 * i for i in range(1, 41)]) + [
    110 - 0.5 * i for i in range(1, 21)
]
WAVE = [round(100 + 3 * math.sin(i / 6), 2) for i in range(200)]  # period ~38 ticks, amplitude $3
# 40 quiet ticks, then a jump on 50x volume that keeps rising for 7 ticks, then a slide
BREAKOUT = [100 + 0.1 * ((i * 7) % 5) for i in range(40)] + [101 + 0.6 * i for i in range(1, 8)]
BREAKOUT += [105 - 0.8 * i for i in range(1, 15)]
BREAKOUT_SIZES = [100] * 40 + [5000] + [300] * 20


def ticks(prices: list[float], sizes: list[int] | None = None, step_s: float = 1.0) -> list[Tick]:
    return [
        Tick.create("AAPL", p, sizes[i] if sizes else 100, START + timedelta(seconds=i * step_s), trade_id=i)
        for i, p in enumerate(prices)
    ]


def run(strategy, stream: list[Tick]) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [(s.side, int(s.tick_id.rsplit(":", 1)[1])) for t in stream for s in strategy.on_tick(t)]


def test_rsi_reversion_buys_the_fall_and_sells_the_rise() -> None:
    # the first losing tick after a flat start drives Wilder's RSI to 0: oversold at once
    assert run(RSIReversion(timeframe="tick"), ticks(DOWN_UP_DOWN)) == [("buy", 20), ("sell", 53), ("buy", 95)]


def test_rsi_reversion_on_a_wave_trades_every_trough_and_crest() -> None:
    signals = run(RSIReversion(timeframe="tick"), ticks(WAVE))
    assert signals[:4] == [("buy", 19), ("sell", 40), ("buy", 59), ("sell", 78)]
    assert [side for side, _ in signals] == ["buy", "sell"] * 5  # alternating: long only


def test_macd_trend_follows_the_turns() -> None:
    assert run(MACDTrend(timeframe="tick"), ticks(DOWN_UP_DOWN)) == [("buy", 43), ("sell", 82)]


def test_bollinger_rsi_buys_below_the_band_and_exits_at_the_mean() -> None:
    strategy = build_strategy("bollinger_rsi", None, {"timeframe": "tick"})
    assert run(strategy, ticks(DOWN_UP_DOWN)) == [("buy", 20), ("sell", 45)]
    wave = run(build_strategy("bollinger_rsi", None, {"timeframe": "tick"}), ticks(WAVE))
    assert wave[:4] == [("buy", 20), ("sell", 35), ("buy", 59), ("sell", 73)]


def test_momentum_breakout_needs_the_volume_and_exits_when_rsi_fades() -> None:
    strategy = build_strategy("momentum_breakout", None, {"timeframe": "tick"})
    assert run(strategy, ticks(BREAKOUT, BREAKOUT_SIZES)) == [("buy", 40), ("sell", 51)]
    quiet = build_strategy("momentum_breakout", None, {"timeframe": "tick"})
    assert run(quiet, ticks(BREAKOUT, [100] * len(BREAKOUT))) == []  # same prices, ordinary volume


def test_ensemble_votes_and_its_confidence_is_the_score() -> None:
    strategy = WeightedEnsemble(trend_window=20, timeframe="tick")
    signals = [s for t in ticks(WAVE) for s in strategy.on_tick(t)]
    assert [(s.side, int(s.tick_id.rsplit(":", 1)[1])) for s in signals][:4] == [
        ("buy", 51),
        ("sell", 70),
        ("buy", 89),
        ("sell", 108),
    ]
    assert all(0.5 <= s.confidence <= 1 for s in signals)
    # with only the trend voter weighed, it buys once the rise lifts the close above its average
    trend_only = WeightedEnsemble({"trend": 1.0, "rsi": 0, "macd": 0, "bollinger": 0, "stochastic": 0}, 0.5, 20)
    first = run(trend_only, ticks(DOWN_UP_DOWN, step_s=300))[0]
    assert first[0] == "buy"
    assert 40 < first[1] < 80


def test_bars_are_built_from_ticks_inside_the_strategy() -> None:
    # one tick every 10 s: the 1-minute RSI sees one close per 6 ticks, signalled on the next bar's first tick
    per_tick = run(RSIReversion(timeframe="tick"), ticks(DOWN_UP_DOWN[::6]))
    per_minute = run(RSIReversion(timeframe="1m"), ticks([p for p in DOWN_UP_DOWN[::6] for _ in range(6)], step_s=10))
    assert [side for side, _ in per_minute] == [side for side, _ in per_tick]
    assert [index for _, index in per_minute] == [6 * (index + 1) for _, index in per_tick]


def test_stored_bars_drive_the_same_decisions_as_ticks() -> None:
    closes = DOWN_UP_DOWN[::6]
    bars = [
        Bar(
            id=f"test:AAPL:1m:{i}",
            symbol="AAPL",
            timestamp=START + timedelta(minutes=i),
            timeframe="1m",
            open=c,
            high=c,
            low=c,
            close=c,
            volume=100,
            trade_count=1,
        )
        for i, c in enumerate(closes)
    ]
    from_bars = RSIReversion(timeframe="1m")
    assert [s.side for b in bars for s in from_bars.on_bar(b)] == [
        s for s, _ in run(RSIReversion(timeframe="tick"), ticks(closes))
    ]
    five = RSIReversion(window=3, timeframe="5m")  # five 1-minute bars make one 5-minute bar
    assert all(s.timestamp.minute % 5 == 0 for b in bars for s in five.on_bar(b))


@pytest.mark.parametrize("class_name", sorted(BUILT_IN))
def test_snapshot_restore_through_json_continues_the_same(class_name: str) -> None:
    stream = ticks(WAVE + DOWN_UP_DOWN)
    uninterrupted = build_strategy(class_name, None, {"timeframe": "tick"})
    expected = [s for t in stream for s in uninterrupted.on_tick(t)]
    first = build_strategy(class_name, None, {"timeframe": "tick"})
    early = [s for t in stream[:111] for s in first.on_tick(t)]
    resumed = build_strategy(class_name, None, {"timeframe": "tick"})
    resumed.restore(json.loads(json.dumps(first.snapshot())))
    assert early + [s for t in stream[111:] for s in resumed.on_tick(t)] == expected


@pytest.mark.parametrize(
    ("class_name", "parameters", "message"),
    [
        ("rsi_reversion", {"oversold": 80}, "oversold < overbought"),
        ("macd_trend", {"fast": 30}, "fast < slow"),
        ("ensemble", {"weights": {"astrology": 1}}, "unknown voters"),
        ("momentum_breakout", {"lookback_bars": 3}, "unknown parameter 'lookback_bars'"),
        ("rsi_reversion", {"timeframe": "2m"}, "unknown timeframe"),
        ("no_such_strategy", {}, "unknown strategy class"),
    ],
)
def test_bad_parameters_say_what_to_fix(class_name: str, parameters: dict, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        build_strategy(class_name, None, parameters)
