"""Numbers rounded the way US equity markets quote them, for people (API responses, the CLI).

Stored values and the broker's arithmetic keep full precision; only what is shown is rounded
(and the few values the live classes round themselves, a fill price, a confidence, and the prices
and VWAPs /history encodes, use ``rounded``:
``round``'s very result, sooner).
Prices of $1 and above trade in cents, below $1 in hundredths of a cent (SEC Rule 612); money
(cash, P&L, commissions) is shown to the cent; a VWAP is an average, so it keeps 4 decimals.
"""

from __future__ import annotations

SUB_DOLLAR = 1.0


def price(value: float | None) -> float | None:
    """A price to the cent, or to 4 decimals below $1."""
    if value is None:
        return None
    return rounded(value, 4 if abs(value) < SUB_DOLLAR else 2)  # /history rounds five a bar


def money(value: float | None) -> float | None:
    """An amount of dollars to the cent."""
    return None if value is None else round(value, 2) + 0.0  # + 0.0 turns -0.0 into 0.0


def vwap(value: float | None) -> float | None:
    """A volume-weighted average price to 4 decimals."""
    return None if value is None else rounded(value, 4)


_TENS = tuple(10.0**n for n in range(16))  # exact in binary (10**22 is the last that is)
_BELOW_2_52 = 2.0**52  # every float under this in size has an exact distance to the nearest integer


def rounded(value: float, digits: int) -> float:
    """``round(value, digits)`` (0 <= digits < 16), the same float, several times sooner (the hot paths:
    fill prices, signal confidences).

    ``round`` converts through a decimal string (~0.6 µs). Scaled by an exact power of ten, the value
    is off the true product by at most half a unit in its last place, so unless the scaled value lies
    within that of a half (a tie to break as ``round`` does) its nearest integer is the correctly
    rounded one, and dividing it back (IEEE division: correctly rounded) gives ``round``'s float.
    Near a tie, a zero result (its sign) or anything not finite, ``round`` decides.
    """
    scale = _TENS[digits]
    scaled = value * scale
    if -_BELOW_2_52 < scaled < _BELOW_2_52:
        whole = round(scaled)
        if whole and abs(abs(scaled - whole) - 0.5) > abs(scaled) * 2.0**-50:
            return whole / scale
    return round(value, digits)
