"""The strategy partition's parts around the reader's poison path: when one entry of a batch fails,
the reader restores the state as it was before that entry; the symbols applied earlier in the batch
must still be written by the next commit, or their entries would be acked while their state is not."""

from __future__ import annotations

from datetime import UTC, datetime

from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.strategy.service import StrategyPartition

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def new_book() -> StrategyBook:
    return StrategyBook([StrategySpec(None, "ma_crossover", {"short_window": 5, "long_window": 20})])


def test_symbols_applied_before_a_restore_in_the_batch_are_still_written() -> None:
    state = StrategyPartition(new_book, 1.0)
    state.restore_parts({})
    committed = state.parts()
    ticks = MockFeed(["AAPL", "MSFT"], 5, clock=stepping_clock(START)).take(40)
    state.apply([tick for tick in ticks if tick.symbol == "AAPL"])
    state.restore(state.checkpoint())  # what the reader does around an entry that then fails
    changed = state.changed_parts()
    assert any(name.startswith("AAPL@") for name in changed), "AAPL was applied in this batch: its part is due"
    restarted = StrategyPartition(new_book, 1.0)
    restarted.restore_parts({**committed, **{k: v for k, v in changed.items() if v is not None}})
    assert restarted.checkpoint() == state.checkpoint()
