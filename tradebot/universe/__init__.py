"""Symbol universes: which symbols tradebot trades, resolved the same way for every worker."""

from tradebot.universe.assets import AssetsUnavailableError, UniverseError
from tradebot.universe.resolver import (
    SYMBOL_MODES,
    live_subscription_symbols,
    resolve_symbols,
    universe_symbols,
)

__all__ = [
    "SYMBOL_MODES",
    "AssetsUnavailableError",
    "UniverseError",
    "live_subscription_symbols",
    "resolve_symbols",
    "universe_symbols",
]
