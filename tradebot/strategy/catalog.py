"""Strategy classes by name: the built-in ones, and a user's own from a module path."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from tradebot.strategy.base import Strategy
from tradebot.strategy.ensemble import WeightedEnsemble
from tradebot.strategy.mean_reversion import BollingerRSIReversion, RSIReversion
from tradebot.strategy.moving_average import MovingAverageCrossover
from tradebot.strategy.trend import MACDTrend, MomentumBreakout

BUILT_IN: dict[str, type] = {
    "ma_crossover": MovingAverageCrossover,
    "rsi_reversion": RSIReversion,
    "macd_trend": MACDTrend,
    "bollinger_rsi": BollingerRSIReversion,
    "momentum_breakout": MomentumBreakout,
    "ensemble": WeightedEnsemble,
}


class StrategyError(ValueError):
    """A strategy cannot be built as configured; the message says what to fix."""


def strategy_class(spec: str) -> type:
    """A built-in name (``rsi_reversion``), ``package.module:Class`` or ``path/to/file.py:Class``."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise StrategyError(f"unknown strategy class {spec!r}: use one of {', '.join(BUILT_IN)} or module:Class")
    try:
        module = _load_file(Path(module_name)) if module_name.endswith(".py") else importlib.import_module(module_name)
    except (ImportError, OSError, SyntaxError) as error:
        raise StrategyError(f"cannot import {module_name!r} for strategy {spec!r}: {error}") from None
    found = getattr(module, class_name, None)
    if not inspect.isclass(found) or not callable(getattr(found, "on_tick", None)):
        raise StrategyError(f"{spec!r}: {module_name} has no strategy class {class_name} (with on_tick)")
    return found


def _load_file(path: Path) -> Any:
    name = f"tradebot_user_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_strategy(spec: str, name: str | None = None, parameters: dict[str, Any] | None = None) -> Strategy:
    """An instance of the class ``spec`` with ``parameters``; a wrong parameter is a StrategyError."""
    cls = strategy_class(spec)
    given = dict(parameters or {})
    if name is not None:
        given["name"] = name
    accepted = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            raise StrategyError(f"{spec}: unknown parameter {unknown[0]!r}; it takes {', '.join(accepted)}")
    try:
        return cls(**given)
    except (TypeError, ValueError) as error:
        raise StrategyError(f"{spec}: bad parameters {given}: {error}") from None
