"""Every worker role and the module that runs it (``python -m <module>``)."""

from __future__ import annotations

import importlib

from tradebot.common.streams import Role

ROLES: dict[str, str] = {
    Role.MARKET_DATA: "tradebot.market_data.service",
    Role.ALPACA: "tradebot.market_data.alpaca_service",
    Role.POLYGON: "tradebot.market_data.polygon_service",
    Role.STRATEGY: "tradebot.strategy.service",
    Role.EXECUTION: "tradebot.execution.service",
    Role.STORAGE: "tradebot.storage.timeseries_service",
    Role.API: "tradebot.api.history_service",
    Role.ALERTS: "tradebot.alerts.service",
}

# What `tradebot up` starts, and how many of each, unless told otherwise.
DEFAULT_UP: dict[str, int] = {
    role: 1 for role in (Role.MARKET_DATA, Role.STRATEGY, Role.EXECUTION, Role.STORAGE, Role.API, Role.ALERTS)
}


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
