"""Several strategies at once: the strategies file, names on signals and orders, sizing, switches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tradebot.common.models import Tick
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.strategy.batch import Batch
from tradebot.strategy.book import Sizing, StrategyBook, StrategySpec, read_strategies_file
from tradebot.strategy.catalog import StrategyError, build_strategy

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
ZIGZAG = [100.0, 100, 100, 100, 90, 120, 60, 160]

FILE = """
[[strategy]]
name = "fast"
class = "ma_crossover"
symbols = ["aapl"]
parameters = { short_window = 2, long_window = 4 }
sizing = { quantity = 5 }

[[strategy]]
name = "big"
class = "ma_crossover"
parameters = { short_window = 2, long_window = 4 }
sizing = { notional = 1000 }

[[strategy]]
name = "quiet"
class = "rsi_reversion"
enabled = false
"""


def ticks(prices: list[float], symbol: str = "AAPL") -> list[Tick]:
    return [Tick.create(symbol, p, 100, START + timedelta(seconds=i), trade_id=i) for i, p in enumerate(prices)]


def book_file(tmp_path: Path, text: str = FILE) -> Path:
    path = tmp_path / "strategies.toml"
    path.write_text(text)
    return path


def test_every_signal_and_order_carries_its_strategy_and_sizing(tmp_path: Path) -> None:
    book = StrategyBook(read_strategies_file(book_file(tmp_path)))
    assert book.names == ["fast", "big", "quiet"]
    outputs = [pair for tick in ticks(ZIGZAG) + ticks(ZIGZAG, "MSFT") for pair in book.on_tick(tick)]
    by_strategy = {(s.strategy, o.strategy, s.symbol) for s, o in outputs}
    assert by_strategy == {("fast", "fast", "AAPL"), ("big", "big", "AAPL"), ("big", "big", "MSFT")}  # fast: AAPL only
    fast = [o for _, o in outputs if o.strategy == "fast"]
    assert {o.quantity for o in fast} == {5}
    big = [(o.side, o.quantity, o.reference_price) for _, o in outputs if o.strategy == "big" and o.symbol == "AAPL"]
    # $1,000 at $120 is 8 shares; the SELL closes exactly what the strategy bought
    assert big == [("buy", 8.0, 120.0), ("sell", 8.0, 60.0), ("buy", 6.0, 160.0)]
    assert len({o.id for _, o in outputs}) == len(outputs)  # two strategies never share an order id


def test_a_strategy_switched_off_keeps_learning_but_publishes_nothing(tmp_path: Path) -> None:
    switches: dict[str, bool] = {"fast": False}
    book = StrategyBook(read_strategies_file(book_file(tmp_path)), switches)
    stream = ticks(ZIGZAG)
    early = [s for tick in stream[:6] for s, _ in book.on_tick(tick) if s.strategy == "fast"]
    switches["fast"] = True  # switched back on at run time
    late = [s for tick in stream[6:] for s, _ in book.on_tick(tick) if s.strategy == "fast"]
    reference = StrategyBook(read_strategies_file(book_file(tmp_path)))
    always_on = [s for tick in stream for s, _ in reference.on_tick(tick) if s.strategy == "fast"]
    assert early == []
    assert len(always_on) == 3
    assert late == [s for s in always_on if s.tick_id in {t.id for t in stream[6:]}]  # its state stayed warm
    assert not [s for tick in stream for s, _ in book.on_tick(tick) if s.strategy == "quiet"]  # off in the file


def test_a_book_restores_from_its_snapshot_and_from_an_old_single_strategy_checkpoint(tmp_path: Path) -> None:
    specs = read_strategies_file(book_file(tmp_path))
    stream = ticks(ZIGZAG)
    whole = StrategyBook(specs)
    expected = [pair for tick in stream for pair in whole.on_tick(tick)]
    first = StrategyBook(specs)
    early = [pair for tick in stream[:5] for pair in first.on_tick(tick)]
    resumed = StrategyBook(specs)
    resumed.restore(first.snapshot())
    assert early + [pair for tick in stream[5:] for pair in resumed.on_tick(tick)] == expected
    single = StrategyBook([StrategySpec(None, "ma_crossover", {"short_window": 2, "long_window": 4})])
    single.restore({"symbols": {"AAPL": {"prices": [100.0, 100, 100, 100], "relation": 0, "recent_tick_ids": []}}})
    assert single.names == ["ma_crossover_2_4"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no \\[\\[strategy\\]\\] tables"),
        ('[[strategy]]\nname = "a"\n', "needs a name and a class"),
        ('[[strategy]]\nname = "a"\nclass = "ensemble"\ncolour = "red"\n', "unknown key 'colour'"),
        ('[[strategy]]\nname = "a"\nclass = "ensemble"\n[[strategy]]\nname = "a"\nclass = "ensemble"\n', "repeated"),
        ('[[strategy]]\nname = "a"\nclass = "ensemble"\nsizing = { quantity = 1, notional = 5 }\n', "exactly one"),
        ("[[strategy]\n", "cannot read"),
        (
            '[[strategy]]\nname = "a"\nclass = "ensemble"\norders = { take_profit = 2 }\n',
            "orders takes take_profit_pct",
        ),
        ('[[strategy]]\nname = "a"\nclass = "ensemble"\norders = { trail_percent = 1, trail_price = 2 }\n', "not both"),
        ('[[strategy]]\nname = "a"\nclass = "ensemble"\norders = { stop_loss_pct = -1 }\n', "must be positive"),
    ],
)
def test_a_bad_strategies_file_says_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        StrategyBook(read_strategies_file(book_file(tmp_path, text)))


def test_the_orders_table_makes_buys_brackets_or_otos_and_sells_trailing_stops(tmp_path: Path) -> None:
    text = FILE.replace(
        "sizing = { quantity = 5 }",
        "sizing = { quantity = 5 }\norders = { take_profit_pct = 2, stop_loss_pct = 1, trail_percent = 0.5 }",
    )
    text = text.replace("sizing = { notional = 1000 }", "sizing = { notional = 1000 }\norders = { stop_loss_pct = 10 }")
    book = StrategyBook(read_strategies_file(book_file(tmp_path, text)))
    orders = [o for tick in ticks(ZIGZAG) for _, o in book.on_tick(tick)]
    fast = [(o.side, o.order_type, o.order_class, o.take_profit_price, o.stop_loss_price, o.trail_percent,
             o.time_in_force) for o in orders if o.strategy == "fast"]  # fmt: skip
    assert fast[:2] == [
        ("buy", "market", "bracket", 122.4, 118.8, None, "day"),  # 120 plus 2 %, minus 1 %
        ("sell", "trailing_stop", None, None, None, 0.5, "gtc"),
    ]
    big = [(o.side, o.order_class, o.take_profit_price, o.stop_loss_price) for o in orders if o.strategy == "big"]
    assert big[0] == ("buy", "oto", None, 108.0)
    assert big[1][:2] == ("sell", None)  # no trail asked: a market sell


def test_sizing_rounds_notional_down_to_whole_shares() -> None:
    assert Sizing(notional=1000).shares(300.0) == 3
    assert Sizing(notional=10).shares(300.0) == 1
    assert Sizing(quantity=2.5).shares(300.0) == 2.5


USER_STRATEGY = """
from tradebot.strategy.base import BarStrategy
from tradebot.strategy.indicators import SMA


class AboveAverage(BarStrategy):
    default_name = "above_average"

    def __init__(self, window: int = 3, *, timeframe: str = "tick", name: str | None = None):
        self.window = window
        super().__init__(timeframe=timeframe, name=name)

    def indicators(self):
        return {"sma": SMA(self.window)}

    def decide(self, state, bar):
        average = state.indicators["sma"].update(bar.close)
        if average is None:
            return None
        return ("buy", 1.0) if bar.close > average else ("sell", 1.0)
"""


def test_a_user_strategy_loads_from_a_file_or_a_module_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_strategies.py").write_text(USER_STRATEGY)
    from_file = build_strategy(f"{tmp_path / 'my_strategies.py'}:AboveAverage", "mine", {"window": 2})
    monkeypatch.syspath_prepend(str(tmp_path))
    from_module = build_strategy("my_strategies:AboveAverage", None, {"window": 2})
    assert (from_file.name, from_module.name) == ("mine", "above_average")
    stream = ticks(ZIGZAG)
    assert [s.side for t in stream for s in from_module.on_tick(t)] == ["buy", "sell", "buy"]  # long only
    with pytest.raises(StrategyError, match="has no strategy class Nope"):
        build_strategy("my_strategies:Nope")
    with pytest.raises(StrategyError, match="cannot import"):
        build_strategy("no_such_module_anywhere:Thing")


def test_a_bad_strategies_file_stops_the_strategy_role_with_one_line(tmp_path: Path) -> None:
    from tradebot.common.config import Settings, SettingsError
    from tradebot.strategy.service import book_factory

    settings = Settings(
        _env_file=None, strategies_file=book_file(tmp_path, '[[strategy]]\nname = "a"\nclass = "nope"\n')
    )
    with pytest.raises(SettingsError, match="invalid setting STRATEGIES_FILE: unknown strategy class 'nope'"):
        book_factory(settings)
    missing = Settings(_env_file=None, strategies_file=tmp_path / "missing.toml")
    with pytest.raises(SettingsError, match="cannot read strategies file"):
        book_factory(missing)


def test_a_batch_gives_what_the_book_gives_tick_by_tick(tmp_path: Path) -> None:
    text = FILE.replace("enabled = false", 'symbols = ["MSFT"]\nparameters = { timeframe = "tick", window = 3 }')
    specs = read_strategies_file(book_file(tmp_path, text))
    stream = MockFeed(["AAPL", "MSFT", "NVDA"], 7, clock=stepping_clock(START)).take(3000)
    one_by_one, at_once = StrategyBook(specs, {"big": False}), StrategyBook(specs, {"big": False})
    expected = [
        (position, signal, order) for position, tick in enumerate(stream) for signal, order in one_by_one.on_tick(tick)
    ]
    assert {signal.strategy for _, signal, _ in expected} == {"fast", "quiet"}  # scanned and one by one; big is off
    assert at_once.on_batch(Batch(stream)) == expected
    assert at_once.snapshot() == one_by_one.snapshot()


def test_the_book_is_long_only_by_its_own_orders() -> None:
    book = StrategyBook([StrategySpec("x", "ma_crossover", {"short_window": 2, "long_window": 4})])
    stream = MockFeed(["AAPL", "MSFT"], 4, clock=stepping_clock(START)).take(400)  # both start with a SELL
    outputs = [pair for tick in stream for pair in book.on_tick(tick)]
    for symbol in ("AAPL", "MSFT"):
        sides = [o.side for _, o in outputs if o is not None and o.symbol == symbol]
        assert sides == ["buy", "sell"] * (len(sides) // 2) + ["buy"] * (len(sides) % 2)  # a SELL only after a BUY
    withheld = [s for s, o in outputs if o is None]
    # still recorded; the crossover alternates, so only each symbol's first signal, a SELL, has nothing to close
    assert sorted((s.symbol, s.side) for s in withheld) == [("AAPL", "sell"), ("MSFT", "sell")]
    assert next(s for s, _ in outputs if s.symbol == "AAPL") in withheld


def test_a_buy_withheld_by_the_trading_state_leaves_the_book_flat() -> None:
    book = StrategyBook([StrategySpec("x", "ma_crossover", {"short_window": 2, "long_window": 4})])
    zigzag = ticks(ZIGZAG)  # BUY at 120, SELL at 60, BUY at 160
    reducing = [(s.side, o) for tick in zigzag[:6] for s, o in book.on_tick(tick, frozenset({"sell"}))]
    assert reducing == [("buy", None)]  # while REDUCING the BUY is not sent...
    active = [(s.side, o and o.side) for tick in zigzag[6:] for s, o in book.on_tick(tick)]
    assert active == [("sell", None), ("buy", "buy")]  # ...so the SELL after it has nothing to close
    assert book.positions["x"] == {"AAPL": 1.0 * 10}


def test_a_buy_the_account_does_not_show_is_forgotten_and_never_sold() -> None:
    specs = [StrategySpec(name, "ma_crossover", {"short_window": 2, "long_window": 4}) for name in ("x", "y")]
    book = StrategyBook(specs)
    zigzag = ticks(ZIGZAG)  # BUY at 120, SELL at 60, BUY at 160
    sent = [o for tick in zigzag[:6] for _, o in book.on_tick(tick) if o is not None]
    assert [(o.strategy, o.side) for o in sent] == [("x", "buy"), ("y", "buy")]
    # the risk stage took y's BUY and denied x's (REDUCING): the account holds AAPL for y only
    assert book.forget_unheld({"y": {"AAPL": 10.0}, "z": {"MSFT": 1.0}}) == [("x", "AAPL")]
    assert book.positions == {"x": {}, "y": {"AAPL": 10.0}}
    sells = [(s.strategy, o and o.side) for s, o in book.on_tick(zigzag[6], frozenset({"sell"}))]
    assert sells == [("x", None), ("y", "sell")]  # x has nothing to sell, y sells what it holds
    assert book.forget_unheld({}) == []  # nothing left to forget
