"""The backtester: the live classes over stored data, deterministic, with its report and outputs."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.backtest_helpers import START, crossover_specs, mock_ticks, request
from tradebot.backtest.engine import run_backtest
from tradebot.backtest.lookahead import check_lookahead
from tradebot.backtest.output import write_html, write_json, write_png, write_trades_csv
from tradebot.backtest.run import simulate
from tradebot.broker.paper import PaperBroker
from tradebot.strategy.book import StrategyBook, StrategySpec

TICKS = mock_ticks()


def test_a_backtest_is_the_book_and_the_broker_run_by_hand() -> None:
    specs = crossover_specs((5, 20), (10, 40))
    by_hand_book, by_hand_broker = StrategyBook(specs), PaperBroker(100_000.0, 1.0, 0.005)
    expected_orders, expected_events = [], []
    for tick in TICKS:
        for _, order in by_hand_book.on_tick(tick):
            if order is None:  # a signal the book sends no order for
                continue
            expected_orders.append(order)
            event = by_hand_broker.execute(order)
            if event is not None:
                expected_events.append(event)
    result = run_backtest(StrategyBook(specs), TICKS, PaperBroker(100_000.0, 1.0, 0.005))
    assert result.orders == expected_orders
    assert result.events == expected_events
    assert len(result.events) > 100
    assert result.account == by_hand_broker.account()
    assert result.equity[-1][1] == pytest.approx(by_hand_broker.account()["cash"] + sum(
        p.quantity * result.last_price[s] for s, p in by_hand_broker.positions.items()
    ))  # fmt: skip


def test_the_same_request_gives_the_same_report() -> None:
    first = simulate(request(crossover_specs((5, 20))), TICKS)
    second = simulate(request(crossover_specs((5, 20))), TICKS)
    assert json.dumps(first.report, default=str) == json.dumps(second.report, default=str)
    assert first.report["run"]["id"] == second.report["run"]["id"]
    other = simulate(request(crossover_specs((5, 21))), TICKS)
    assert other.report["run"]["id"] != first.report["run"]["id"]


def test_the_report_has_every_figure_per_symbol_and_per_strategy() -> None:
    # a commission (the default is Alpaca's: none), so the fees have something to add up
    report = simulate(request(crossover_specs((5, 20), (10, 40)), commission_per_share=0.005), TICKS).report
    for name in ("total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown",
                 "max_drawdown_samples", "win_rate", "profit_factor", "expectancy", "trades", "average_win",
                 "average_loss", "exposure", "turnover", "total_fees", "buy_and_hold_return"):  # fmt: skip
        assert name in report, name
    assert set(report["per_symbol"]) == {"AAPL", "MSFT", "NVDA"}
    assert set(report["per_strategy"]) == {"cross_5_20", "cross_10_40"}
    assert report["trades"] == sum(f["trades"] for f in report["per_strategy"].values()) > 20
    assert report["pnl"] == pytest.approx(sum(f["pnl"] for f in report["per_symbol"].values()))
    assert 0 < report["exposure"] <= 1
    assert report["total_fees"] > 0
    assert report["sample"] == "1m"
    assert report["observations"] == len(TICKS)


def test_every_pnl_is_attributed_to_its_strategy() -> None:
    outcome = simulate(request(crossover_specs((5, 20), (10, 40))), TICKS)
    result = outcome.result
    # what the strategies made, closed and still open at the last prices, is what the account made
    closed = sum(t.pnl for t in result.ledger.trades)
    still_open = sum(
        lot.quantity * result.last_price[symbol] - lot.cost - lot.fees
        for (_, symbol), lot in result.ledger.lots.items()
    )
    assert closed + still_open == pytest.approx(result.equity[-1][1] - result.starting_cash, abs=1e-6)
    assert {t.strategy for t in result.ledger.trades} == {"cross_5_20", "cross_10_40"}


def test_the_pre_trade_seam_can_deny_orders() -> None:
    outcome = simulate(
        request(crossover_specs((5, 20))),
        TICKS,
        check=lambda order, _broker: "no buying" if order.side == "buy" else None,
    )
    assert outcome.result.denials
    assert all(order.side == "buy" for order, _ in outcome.result.denials)
    assert not [e for e in outcome.result.events if e.status == "filled"]
    assert outcome.report["denials"] == len(outcome.result.denials)


def test_outputs_json_csv_png_and_a_self_contained_html_page(tmp_path: Path) -> None:
    outcome = simulate(request(crossover_specs((5, 20))), TICKS)
    write_json(outcome.report, tmp_path / "report.json")
    write_trades_csv(outcome.result, tmp_path / "trades.csv")
    write_png(outcome.result, tmp_path / "equity.png")
    write_html(outcome.report, outcome.result, tmp_path / "report.html")
    assert json.loads((tmp_path / "report.json").read_text())["trades"] == outcome.report["trades"]
    lines = (tmp_path / "trades.csv").read_text().splitlines()
    assert lines[0].startswith("strategy,symbol,entry_time")
    assert len(lines) == outcome.report["trades"] + 1
    assert (tmp_path / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page
    assert "<script" not in page
    assert "src=" not in page
    assert "href=" not in page


def test_the_lookahead_check_catches_a_peeking_strategy_and_clears_honest_ones() -> None:
    honest = request(crossover_specs((5, 20)))
    found = check_lookahead(honest, TICKS[:1500], simulate(honest, TICKS[:1500]).result.signals, limit=20)
    assert found["checked"] == 20
    assert found["changed"] == []
    biased = request((StrategySpec("peeking", "tests.backtest_helpers:PeekingStrategy", {"ahead": 3}),))
    signals = simulate(biased, TICKS[:1500]).result.signals
    found = check_lookahead(biased, TICKS[:1500], signals, limit=20)
    assert found["checked"] == 20
    assert len(found["changed"]) == 20
    assert "used later data" in found["changed"][0]["why"]


def test_the_equity_curve_is_sampled_per_period() -> None:
    outcome = simulate(request(crossover_specs((5, 20)), sample="5m"), TICKS)  # 6,000 s of ticks
    times = [t for t, _ in outcome.result.equity]
    assert times[0] == START
    assert len(times) == 1 + 20
    assert all(later - earlier == timedelta(minutes=5) for earlier, later in itertools.pairwise(times[1:]))
