"""rounding.rounded is round() to the float, only faster: checked against round() itself."""

from __future__ import annotations

import math
import random

import pytest

from tradebot.common import rounding


def _values() -> list[float]:
    rng = random.Random(16)
    values = [rng.uniform(-2, 2) for _ in range(50_000)]
    values += [rng.uniform(1, 1e7) for _ in range(50_000)]
    values += [round(rng.uniform(0, 1000), places) for places in (2, 3, 4, 5) for _ in range(25_000)]
    values += [rng.randint(1, 10**7) / 1000 + 0.0005 for _ in range(25_000)]  # ties and near-ties
    values += [rng.randint(1, 10**7) / 100_000 + 0.000005 for _ in range(25_000)]
    values += [0.0, -0.0, 1e-9, -1e-9, 0.995, 1.005, 2.675, 0.00005, 0.99995, -0.005, 1e15, 1e300, -1e300]
    values += [math.inf, -math.inf, 5e-324, 9_999_999.995, 99_999.99995]
    return values


@pytest.mark.parametrize("digits", [2, 4])
def test_rounded_is_round_to_the_float(digits: int) -> None:
    for value in _values():
        assert repr(rounding.rounded(value, digits)) == repr(round(value, digits)), value
    assert math.isnan(rounding.rounded(math.nan, digits))


def test_prices_keep_four_decimals_below_a_dollar() -> None:
    assert rounding.price(0.123456) == 0.1235
    assert rounding.price(-0.123456) == -0.1235
    assert rounding.price(1.23456) == 1.23
    assert rounding.price(None) is None
    assert rounding.vwap(100.123456) == 100.1235
