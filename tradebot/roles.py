"""Every worker role and the module that runs it (``python -m <module>``)."""

from __future__ import annotations

import importlib

ROLES: dict[str, str] = {
    "market_data": "tradebot.market_data.service",
    "alpaca": "tradebot.market_data.alpaca_service",
    "polygon": "tradebot.market_data.polygon_service",
    "strategy": "tradebot.strategy.service",
    "execution": "tradebot.execution.service",
    "storage": "tradebot.storage.timeseries_service",
    "api": "tradebot.api.history_service",
}

# What `tradebot up` starts, and how many of each, unless told otherwise.
DEFAULT_UP = {"market_data": 1, "strategy": 1, "execution": 1, "storage": 1, "api": 1}


class UnknownRoleError(ValueError):
    """A role name that is not in ROLES."""


def module_for(role: str) -> str:
    """The module of a role, or a clear error listing the known ones."""
    try:
        return ROLES[role]
    except KeyError:
        raise UnknownRoleError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}") from None


def run_role(role: str) -> None:
    """Run a role in this process, exactly as ``python -m <module>`` would."""
    importlib.import_module(module_for(role)).main()
