"""The equity curve: the account sampled on a fixed wall-clock grid (EQUITY_SAMPLE_S, a minute).

Each execution replica samples the account checkpoint and publishes the point on the equity
stream; a sample's id and key are its grid time, so the copies of several replicas (or a retried
publish) are stored once. Positions are valued at the last price the account has seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from tradebot.broker.checkpoint import read_account_snapshot
from tradebot.broker.paper import PaperBroker
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.config import Settings
from tradebot.common.lifecycle import wait_or_stop
from tradebot.common.models import ACCOUNT_SCOPE, EquitySample
from tradebot.common.streams import EQUITY_SAMPLES

log = logging.getLogger(__name__)


def equity_sample(checkpoint: dict[str, Any], at: datetime) -> EquitySample:
    """One point of the curve from the execution checkpoint (account and risk memory)."""
    broker = PaperBroker(starting_cash=0.0)
    broker.restore(checkpoint)
    account = broker.account()
    gross = sum(abs(p.quantity) * (p.last_price or p.average_cost) for p in broker.positions.values())
    peak = max((checkpoint.get("risk") or {}).get("peak_equity") or account["equity"], account["equity"])
    return EquitySample(
        id=f"equity-{at.isoformat()}",
        symbol=ACCOUNT_SCOPE,
        timestamp=at,
        cash=account["cash"],
        equity=account["equity"],
        gross_exposure=gross,
        realised_pnl=account["realised_pnl"],
        unrealised_pnl=account["unrealised_pnl"],
        drawdown=min(1.0, max(0.0, 1 - account["equity"] / peak)) if peak > 0 else 0.0,
    )


def grid_time(now: float, interval_s: float) -> datetime:
    """The sample time ``now`` falls on: the start of its interval."""
    return datetime.fromtimestamp(now - now % interval_s, UTC)


async def sample_equity(bus: Bus, settings: Settings, stop: asyncio.Event) -> None:
    """Publish a sample at every grid time until stopped (nothing before the first order)."""
    interval = settings.equity_sample_s
    while not await wait_or_stop(stop, interval - time.time() % interval):
        try:
            saved = await read_account_snapshot(bus.redis)
            if saved:
                await bus.publish([(EQUITY_SAMPLES, equity_sample(saved, grid_time(time.time(), interval)))])
        except RECOVERABLE_REDIS_ERRORS as error:
            log.warning("equity sample skipped: %s", error)
