"""Shared pieces of the backtest tests: mock ticks, a request, and a strategy that peeks ahead."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

from tradebot.backtest.run import BacktestRequest
from tradebot.common.models import Signal, Tick, stable_id
from tradebot.market_data.mock_feed import MockFeed
from tradebot.strategy.book import Sizing, StrategySpec

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SYMBOLS = ("AAPL", "MSFT", "NVDA")


def mock_ticks(count: int = 6000, step: timedelta = timedelta(seconds=1)) -> list[Tick]:
    return MockFeed(list(SYMBOLS), 42, clock=lambda: START, step=step).take(count)


def crossover_specs(*windows: tuple[int, int]) -> tuple[StrategySpec, ...]:
    return tuple(
        StrategySpec(
            f"cross_{short}_{long}",
            "ma_crossover",
            {"short_window": short, "long_window": long},
            sizing=Sizing(quantity=10),
        )
        for short, long in windows
    )


def request(specs: tuple[StrategySpec, ...], end: datetime | None = None, **fields: object) -> BacktestRequest:
    return BacktestRequest(
        symbols=SYMBOLS,
        start=START,
        end=end or START + timedelta(days=1),
        specs=specs,
        **fields,  # type: ignore[arg-type]
    )


class PeekingStrategy:
    """Deliberately biased: buys a tick only once it has seen that the next ``ahead`` ticks were higher.

    The signal is stamped with the earlier tick (its id and price), as a centred indicator or a
    shifted column in a dataframe would do: it cannot be traded live.
    """

    def __init__(self, ahead: int = 3, *, name: str | None = None):
        self.name = name or "peeking"
        self.ahead = ahead
        self._recent: dict[str, deque[Tick]] = {}

    def on_tick(self, tick: Tick) -> list[Signal]:
        recent = self._recent.setdefault(tick.symbol, deque(maxlen=self.ahead + 1))
        recent.append(tick)
        if len(recent) <= self.ahead or not all(later.price > recent[0].price for later in list(recent)[1:]):
            return []
        first = recent[0]
        side = "buy" if int(first.id.rsplit(":", 1)[1]) % 2 == 0 else "sell"
        return [
            Signal(id=stable_id(self.name, first.id), symbol=first.symbol, timestamp=first.timestamp, side=side,
                   price=first.price, confidence=1.0, strategy=self.name, tick_id=first.id)
        ]  # fmt: skip

    def snapshot(self) -> dict:
        return {}

    def restore(self, snapshot: dict) -> None:
        pass
