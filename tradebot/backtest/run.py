"""The importable backtest: a request in, a report (and the raw result) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tradebot.backtest.data import BacktestInputError, load_bars, load_ticks
from tradebot.backtest.engine import BacktestResult, PreTradeCheck, run_backtest
from tradebot.backtest.report import build_report
from tradebot.broker.paper import PaperBroker
from tradebot.common.config import Settings
from tradebot.common.db import Executor
from tradebot.common.models import Bar, Tick, stable_id
from tradebot.execution.service import BrokerPartition
from tradebot.strategy.book import StrategyBook, StrategySpec
from tradebot.strategy.catalog import StrategyError


@dataclass(frozen=True)
class BacktestRequest:
    """What to run on which data, with which account."""

    symbols: tuple[str, ...]
    start: datetime
    end: datetime
    specs: tuple[StrategySpec, ...]
    bars: str | None = None  # None: stored ticks; else the timeframe of stored bars to run on
    sample: str = "1m"  # how often the equity curve is sampled (and the statistics annualised)
    starting_cash: float = 100_000.0
    # the paper broker's defaults (SLIPPAGE_BPS, COMMISSION_PER_SHARE), so a request and the live demo agree
    slippage_bps: float = Settings.model_fields["slippage_bps"].default
    commission_per_share: float = Settings.model_fields["commission_per_share"].default
    # The risk settings (RISK_*, sizing): given, orders go through the execution worker's own risk
    # stage and paper broker, exactly as live; None, straight to a paper broker.
    risk: Settings | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, **fields: Any) -> BacktestRequest:
        """A request with the paper broker's settings (STARTING_CASH, SLIPPAGE_BPS, COMMISSION_PER_SHARE)."""
        account = {
            "starting_cash": settings.starting_cash,
            "slippage_bps": settings.slippage_bps,
            "commission_per_share": settings.commission_per_share,
        }
        return cls(**{"risk": settings, **account, **fields})

    @property
    def run_id(self) -> str:
        """Deterministic: the same request always has the same id (and the same results)."""
        return "bt-" + stable_id(repr(self))

    def book(self) -> StrategyBook:
        try:
            return StrategyBook(self.specs)
        except StrategyError as error:
            raise BacktestInputError(str(error)) from None

    def broker(self) -> PaperBroker | BrokerPartition:
        """A fresh account: the execution worker's (risk stage + paper broker) when ``risk`` is set."""
        if self.risk is None:
            return PaperBroker(self.starting_cash, self.slippage_bps, self.commission_per_share)
        account = {
            "starting_cash": self.starting_cash,
            "slippage_bps": self.slippage_bps,
            "commission_per_share": self.commission_per_share,
        }
        return BrokerPartition(self.risk.model_copy(update=account))


@dataclass
class BacktestOutcome:
    report: dict[str, Any]
    result: BacktestResult = field(repr=False)


def simulate(
    request: BacktestRequest, observations: Sequence[Tick] | Sequence[Bar], check: PreTradeCheck | None = None
) -> BacktestOutcome:
    """Run the request on observations already loaded (pure: no I/O)."""
    book = request.book()
    result = run_backtest(book, observations, request.broker(), sample=request.sample, check=check)
    run = {
        "id": request.run_id,
        "strategies": book.names,
        "symbols": list(request.symbols),
        "start": request.start.isoformat(),
        "end": request.end.isoformat(),
        "source": f"bars:{request.bars}" if request.bars else "ticks",
        "specs": [asdict(spec) for spec in request.specs],
    }
    return BacktestOutcome(build_report(result, run=run), result)


async def load_observations(executor: Executor, request: BacktestRequest) -> Sequence[Tick] | list[Bar]:
    if request.bars:
        return await load_bars(executor, request.symbols, request.bars, request.start, request.end)
    return await load_ticks(executor, request.symbols, request.start, request.end)


async def backtest(executor: Executor, request: BacktestRequest, check: PreTradeCheck | None = None) -> BacktestOutcome:
    """Load the stored data of the request and run it (raises BacktestInputError on bad input)."""
    request.book()  # a bad strategy is reported before any data is read
    return simulate(request, await load_observations(executor, request), check)
