"""Numbers rounded the way US equity markets quote them, for people (API responses, the CLI).

Stored values and the broker's arithmetic keep full precision; only what is shown is rounded.
Prices of $1 and above trade in cents, below $1 in hundredths of a cent (SEC Rule 612); money
(cash, P&L, commissions) is shown to the cent; a VWAP is an average, so it keeps 4 decimals.
"""

from __future__ import annotations

SUB_DOLLAR = 1.0


def price(value: float | None) -> float | None:
    """A price to the cent, or to 4 decimals below $1."""
    if value is None:
        return None
    return round(value, 4 if abs(value) < SUB_DOLLAR else 2)


def money(value: float | None) -> float | None:
    """An amount of dollars to the cent."""
    return None if value is None else round(value, 2) + 0.0  # + 0.0 turns -0.0 into 0.0


def vwap(value: float | None) -> float | None:
    """A volume-weighted average price to 4 decimals."""
    return None if value is None else round(value, 4)
