"""Numbers rounded the way US equity markets quote them, for people (API responses, the CLI).

Stored values and the broker's arithmetic keep full precision; only what is shown is rounded.
Prices of $1 and above trade in cents, below $1 in hundredths of a cent (SEC Rule 612); money
(cash, P&L, commissions) is shown to the cent; a VWAP is an average, so it keeps 4 decimals.
"""

from __future__ import annotations

import math

SUB_DOLLAR = 1.0
_SCALES = {2: 100.0, 4: 10_000.0}
# Below this many hundredths (ten-thousandths), a scaled float is off its exact value by less than
# 6e-8 (half an ulp of 1e9): far less than the margin kept from a half.
_EXACT_BELOW = 1e9
_TIE_MARGIN = 1e-6


def rounded(value: float, digits: int) -> float:
    """``round(value, digits)`` for 2 or 4 digits, the same float, ~2x faster (/history rounds
    five numbers a bar). round() converts through decimal digits; here the value is scaled to
    whole units and rounded to the nearest integer, which is the same answer unless the scaled
    value lies within the float error of a half (a possible tie), or is huge, or the result is
    zero (round keeps the sign of -0.0): then round() decides."""
    scale = _SCALES[digits]
    scaled = value * scale
    if -_EXACT_BELOW < scaled < _EXACT_BELOW:  # also false for NaN
        whole = math.floor(scaled)
        fraction = scaled - whole  # exact
        if abs(fraction - 0.5) > _TIE_MARGIN:
            result = (whole + (fraction > 0.5)) / scale  # an exact integer / 10^k: correctly rounded
            if result:
                return result
    return round(value, digits)


def price(value: float | None) -> float | None:
    """A price to the cent, or to 4 decimals below $1."""
    if value is None:
        return None
    return rounded(value, 2 if value >= SUB_DOLLAR or value <= -SUB_DOLLAR else 4)


def money(value: float | None) -> float | None:
    """An amount of dollars to the cent."""
    return None if value is None else round(value, 2) + 0.0  # + 0.0 turns -0.0 into 0.0


def vwap(value: float | None) -> float | None:
    """A volume-weighted average price to 4 decimals."""
    return None if value is None else rounded(value, 4)
