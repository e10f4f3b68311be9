"""Shared by the Alpaca broker tests: the emulator, settings that point at it, orders and events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import TERMINAL_STATUSES, Order, OrderEvent
from tradebot.common.streams import ORDER_EVENTS

from .emulators.alpaca_trading import AlpacaTradingEmulator

KEY, SECRET = "test-key", "test-secret"
# The risk stage runs on the broker path too; tests of the broker itself publish bursts of orders
# for one symbol within a second, so its rate and duplicate checks are off there (test_broker_risk
# exercises the risk stage on this path).
BURSTS_ALLOWED = {
    "risk_duplicate_window_s": 0.0,
    "risk_max_orders_per_second": 0,
    "risk_max_orders_per_minute": 0,
    "risk_max_symbol_orders_per_second": 0,
    "risk_max_symbol_orders_per_minute": 0,
}


@pytest.fixture
def emulator() -> Iterator[AlpacaTradingEmulator]:
    with AlpacaTradingEmulator(key=KEY, secret=SECRET, slow_s=1.5) as emu:
        yield emu


def alpaca_settings(settings: Settings, emu: AlpacaTradingEmulator, **overrides: object) -> Settings:
    """Execution at the emulator: short timeouts and intervals so faults resolve quickly."""
    values = {
        "execution_broker": "alpaca",
        "alpaca_key": KEY,
        "alpaca_secret": SECRET,
        "alpaca_trading_url": emu.url,
        "alpaca_trading_stream_url": emu.stream_url,
        "alpaca_timeout_s": 0.5,
        "alpaca_poll_interval_s": 0.2,
        "alpaca_requests_per_minute": 60_000,
        "reconcile_interval_s": 1.0,
        **BURSTS_ALLOWED,
        **overrides,
    }
    return Settings(**{**settings.model_dump(), **values})  # type: ignore[arg-type]


def order(number: int, side: str = "buy", quantity: float = 10, symbol: str = "AAPL", **fields: object) -> Order:
    return Order(
        id=f"co-{number}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        reference_price=100.0,
        signal_id=f"sig-{number}",
        timestamp=datetime.now(UTC),
        **fields,  # type: ignore[arg-type]
    )


async def order_events(bus: Bus) -> list[OrderEvent]:
    return [decode(fields) for _, fields in await bus.redis.xrange(ORDER_EVENTS)]  # type: ignore[misc]


def by_order(events: list[OrderEvent]) -> dict[str, list[OrderEvent]]:
    grouped: dict[str, list[OrderEvent]] = defaultdict(list)
    for event in events:
        grouped[event.client_order_id].append(event)
    return grouped


def finished(events: list[OrderEvent], client_ids: set[str]) -> bool:
    ended = {e.client_order_id for e in events if e.status in TERMINAL_STATUSES}
    return client_ids <= ended


def positions_from(events: list[OrderEvent]) -> dict[str, float]:
    """What the fills on the bus add up to, per symbol."""
    held: dict[str, float] = defaultdict(float)
    for event in events:
        if event.status in ("filled", "partially_filled"):
            held[event.symbol] += event.quantity if event.side == "buy" else -event.quantity
    return {symbol: quantity for symbol, quantity in held.items() if abs(quantity) > 1e-9}
