"""Trading states, NautilusTrader's: ACTIVE, REDUCING (only orders that shrink exposure), HALTED."""

from __future__ import annotations

import enum


class TradingState(enum.StrEnum):
    """How much the account may trade; a stricter state always wins over a looser one."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def strictness(self) -> int:
        return _STRICTNESS[self]


_STRICTNESS = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def strictest(*states: TradingState) -> TradingState:
    """The state that allows the least."""
    return max(states, key=lambda state: state.strictness)
