"""The account on the Alpaca path (tradebot/execution/broker_book.py): fills booked as they are told,
losing closes fed to the protections and Kelly, and /portfolio, /positions, /pnl, /account and the
equity curve in the paper path's shapes (real Redis, the Alpaca emulator through alpaca-py)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from tradebot.api.history_service import create_app
from tradebot.broker.base import Booking, BrokerAccount, BrokerPosition
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import EquitySample
from tradebot.common.streams import EQUITY_SAMPLES, ORDERS_NEW
from tradebot.execution.broker_book import BrokerBook
from tradebot.execution.equity import equity_sample
from tradebot.risk.views import read_checkpoint

from .broker_helpers import alpaca_settings, by_order, emulator, order, order_events
from .emulators.alpaca_trading import AlpacaTradingEmulator
from .helpers import wait_until
from .test_broker_worker import execution, until_finished

__all__ = ["emulator"]  # the fixture


def test_a_read_that_disagrees_with_the_ledger_moves_only_the_prices() -> None:
    book = BrokerBook()
    assert book.refresh(BrokerAccount(1_000.0, {}), {})
    book.book(Booking("co-1", "fast", "AAPL", "buy", 5, 100.0, ends=True))
    # The broker's read already holds a fill the ledger has not told yet: taking it whole would count it twice.
    ahead = BrokerAccount(0.0, {"AAPL": BrokerPosition(10, 100.0, 104.0)})
    assert not book.refresh(ahead, {"AAPL": 5})
    assert (book.cash, book.positions["AAPL"].quantity, book.positions["AAPL"].last_price) == (500.0, 5, 104.0)
    assert book.refresh(ahead, {"AAPL": 10})
    assert (book.cash, book.positions["AAPL"].quantity, book.starting_cash) == (0.0, 10, 1_000.0)


def test_a_sell_is_one_close_with_the_pnl_of_all_its_fills() -> None:
    book = BrokerBook()
    book.book(Booking("co-1", None, "AAPL", "buy", 10, 100.0, ends=True))
    assert book.book(Booking("co-2", None, "AAPL", "sell", 4, 90.0, ends=False)) is None
    assert book.book(Booking("co-2", None, "AAPL", "sell", 2, 95.0, ends=False)) is None
    assert book.book(Booking("co-2", None, "AAPL", "sell", 0, 0.0, ends=True)) == ("AAPL", -50.0)  # canceled
    assert book.positions["AAPL"].realised_pnl == -50.0
    restored = BrokerBook()
    restored.restore(book.snapshot(), book.pnl.snapshot())
    assert restored.snapshot() == book.snapshot()


async def test_a_losing_close_at_alpaca_starts_the_cooldown_and_counts_for_kelly(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.partial_fills = 2  # the sell's two fills are one close
    config = alpaca_settings(settings, emulator, risk_cooldown_s=600.0)
    async with execution(config):
        await bus.publish([(ORDERS_NEW, order(1))])
        await until_finished(bus, {"co-1"})
        emulator.book.set_price("AAPL", 90.0)
        await bus.publish([(ORDERS_NEW, order(2, side="sell"))])
        await until_finished(bus, {"co-2"})
        await bus.publish([(ORDERS_NEW, order(3)), (ORDERS_NEW, order(4, symbol="MSFT"))])
        await until_finished(bus, {"co-3", "co-4"})
    grouped = by_order(await order_events(bus))
    (cooling,) = grouped["co-3"]
    assert cooling.status == "denied"
    assert cooling.reason is not None
    assert cooling.reason.startswith("cooldown:")
    assert grouped["co-4"][-1].status == "filled"  # the cooldown is per symbol
    saved = await read_checkpoint(bus.redis)
    assert saved is not None
    wins, losses, won, lost = saved["risk"]["stats"]
    assert (wins, losses, won, round(lost, 6)) == (0, 1, 0.0, 100.0)  # Kelly's statistics: one losing trade


async def test_portfolio_positions_pnl_and_equity_on_the_alpaca_path(
    bus: Bus, settings: Settings, emulator: AlpacaTradingEmulator
) -> None:
    emulator.book.cash = 10_000.0
    unlimited = alpaca_settings(
        settings, emulator, risk_max_position_pct=0.0, risk_max_gross_exposure_pct=0.0, equity_sample_s=0.2
    )
    async with execution(unlimited):
        await bus.publish([(ORDERS_NEW, order(1, strategy="fast")), (ORDERS_NEW, order(2, strategy="slow"))])
        await until_finished(bus, {"co-1", "co-2"})
        emulator.book.set_price("AAPL", 110.0)
        await bus.publish([(ORDERS_NEW, order(3, side="sell", quantity=5, strategy="fast"))])
        await until_finished(bus, {"co-3"})
        # Two more samples: the first may have read the account before the sell's commit and been
        # added only now; the second read it after the first was added, so after the sell.
        sampled = await bus.redis.xlen(EQUITY_SAMPLES)
        await wait_until(lambda: _more_samples(bus, sampled + 1), 30, "two equity samples after the sell")
    (_, fields), *_ = await bus.redis.xrevrange(EQUITY_SAMPLES, count=1)
    published = decode(fields)
    assert isinstance(published, EquitySample)
    assert (published.cash, published.equity) == (8_550.0, 10_200.0)  # the sampler publishes; storage stores
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api,
    ):
        portfolio = (await api.get("/portfolio")).json()
        positions = (await api.get("/positions")).json()
        by_strategy = (await api.get("/pnl", params={"by": "strategy"})).json()["pnl"]
        by_symbol = (await api.get("/pnl", params={"by": "symbol"})).json()["pnl"]
        account = (await api.get("/account")).json()
        risk = (await api.get("/risk")).json()
    assert {key: portfolio[key] for key in ("starting_cash", "cash", "equity", "realised_pnl", "unrealised_pnl")} == {
        "starting_cash": 10_000.0,
        "cash": 8_550.0,
        "equity": 10_200.0,
        "realised_pnl": 50.0,
        "unrealised_pnl": 150.0,
    }
    assert portfolio["pnl_by_strategy"] == {
        "fast": {"realised": 50.0, "unrealised": 50.0},
        "slow": {"realised": 0.0, "unrealised": 100.0},
    }
    assert by_symbol == {"AAPL": {"realised": 50.0, "unrealised": 150.0}}
    assert {name: row["symbols"]["AAPL"]["quantity"] for name, row in by_strategy.items()} == {"fast": 5, "slow": 10}
    assert [(p["symbol"], p["quantity"], p["average_cost"], p["last_price"], p["market_value"]) for p in positions] == [
        ("AAPL", 15, 100.0, 110.0, 1_650.0)
    ]
    assert (account["cash"], account["equity"]) == (8_550.0, 10_200.0)
    assert [p["symbol"] for p in account["positions"]] == ["AAPL"]
    assert risk["usage"]["open_positions"] == 1
    saved = await read_checkpoint(bus.redis)
    assert saved is not None
    sample = equity_sample(saved, datetime(2026, 3, 2, 15, 0, tzinfo=UTC))  # what the sampler stores each minute
    assert (sample.cash, sample.equity, sample.gross_exposure) == (8_550.0, 10_200.0, 1_650.0)


async def _more_samples(bus: Bus, before: int) -> bool:
    return bool(await bus.redis.xlen(EQUITY_SAMPLES) > before)
