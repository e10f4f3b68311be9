"""rounding.rounded is round(value, digits) itself, float for float (the hot paths use it for speed)."""

from __future__ import annotations

import math
import random

import pytest

from tradebot.common import rounding
from tradebot.common.rounding import rounded


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))


def test_rounded_is_round_on_prices_confidences_and_ties() -> None:
    draw = random.Random(19)
    values = [0.0, -0.0, 2.675, 0.125, 0.375, 1.0005, 187.25005, -187.25005, 1e-9, -1e-9, 5e15, 1e300, 1e-300]
    for _ in range(20_000):
        cents = round(draw.uniform(1, 500), 2)
        values += [
            cents * 1.0001, cents * 0.9999,  # fill prices: a quote moved by 1 bp of slippage
            draw.uniform(0, 1), draw.lognormvariate(0, 6),  # confidences; any size
            round(draw.uniform(0, 1000), 4) + 0.00005, draw.randint(0, 10**7) / 2e4,  # at and near ties
        ]  # fmt: skip
    for value in values:
        for digits in (0, 2, 4, 6, 9):
            assert _same(rounded(value, digits), round(value, digits)), (value, digits)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_rounded_leaves_what_is_not_finite_to_round(value: float) -> None:
    assert _same(rounded(value, 4), round(value, 4))


def test_prices_keep_four_decimals_below_a_dollar_and_vwaps_four() -> None:
    assert rounding.price(0.123456) == 0.1235
    assert rounding.price(-0.123456) == -0.1235
    assert rounding.price(1.23456) == 1.23
    assert rounding.price(2.675) == round(2.675, 2)  # a tie: round() decides
    assert rounding.price(None) is None
    assert rounding.vwap(100.123456) == 100.1235
