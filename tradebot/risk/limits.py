"""Every limit of the risk engine in one frozen record, built from the settings (0 = check off)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tradebot.common.config import Settings


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits, protections, sizing and the fee estimate used for buying power."""

    max_order_notional: float = 0.0
    max_position_pct: float = 0.0
    max_gross_exposure_pct: float = 0.0
    max_open_positions: int = 0
    max_orders_per_second: int = 0
    max_orders_per_minute: int = 0
    max_symbol_orders_per_second: int = 0
    max_symbol_orders_per_minute: int = 0
    duplicate_window_s: float = 0.0
    price_collar_pct: float = 0.0
    daily_loss_pct: float = 0.0
    max_drawdown_pct: float = 0.0
    cooldown_s: float = 0.0
    loss_lock_count: int = 0
    loss_lock_window_s: float = 0.0
    loss_lock_s: float = 0.0
    enforce_market_hours: bool = False
    sizing: str = "fixed_quantity"
    # a strategy's own mode (``position_sizing`` of its strategies-file entry), by strategy name
    sizing_by_strategy: Mapping[str, str] = field(default_factory=dict)
    sizing_notional: float = 5_000.0
    sizing_risk_pct: float = 0.01
    sizing_stop_pct: float = 0.02
    sizing_atr_multiple: float = 2.0
    sizing_kelly_fraction: float = 0.5
    sizing_kelly_cap: float = 0.10
    fractional_shares: bool = False
    slippage_bps: float = 0.0
    commission_per_share: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, real_broker: bool = False) -> RiskLimits:
        """The limits a worker runs with; market hours follow MARKET_HOURS (auto: real brokers only)."""
        values = {}
        for limit in fields(cls):
            for name in (f"risk_{limit.name}", limit.name):
                if hasattr(settings, name):
                    values[limit.name] = getattr(settings, name)
                    break
        values["sizing"] = settings.position_sizing
        values["slippage_bps"], values["commission_per_share"] = settings.slippage_bps, settings.commission_per_share
        values["enforce_market_hours"] = settings.market_hours == "enforce" or (
            settings.market_hours == "auto" and real_broker
        )
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for /risk."""
        shown = {limit.name: getattr(self, limit.name) for limit in fields(self)}
        shown["sizing_by_strategy"] = dict(self.sizing_by_strategy)
        return shown
