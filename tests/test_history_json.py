"""/history's response is encoded straight from the rows (routes_history.history_json): it must be
the document the HistoryOut model (bar by bar through bar_out) would have produced: the same keys
in the same order, the same values, every float the same double. Only a number's spelling may
differ (msgspec writes 1e20 where pydantic writes 1e+20), which no JSON reader can tell apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tradebot.api.routes_history import bar_out, history_json
from tradebot.api.schemas import HistoryOut
from tradebot.storage.queries import Series

START = datetime(2024, 3, 10, 4, 59, 59, 999_999, tzinfo=UTC)  # the evening before a DST change in New York


def rows() -> list[dict[str, object]]:
    """Bars with the values that could tell two encoders apart."""
    prices = [101.005, 0.123456, 1e20, 5e-7, 99.999, 42.0, 1234567.891, -0.0]
    found: list[dict[str, object]] = []
    for i, price in enumerate(prices):
        found.append(
            {
                "ts": START + timedelta(hours=7 * i, microseconds=i),
                "open": price,
                "high": price * 1.01,
                "low": float("inf") if i == 3 else price * 0.99,
                "close": price + 0.004,
                "volume": float(1 + i * 1_000_003),
                "trade_count": 1 + i * 97,
                "vwap": None if i % 3 == 0 else price * 1.00001,
            }
        )
    return found


@pytest.mark.parametrize("timeframe", ["1m", "1d"])
@pytest.mark.parametrize("sources", [[], ["alpaca"], ["mock", "polygon"]])
def test_the_encoded_history_equals_the_models_json(timeframe: str, sources: list[str]) -> None:
    found = Series(rows(), sources)  # type: ignore[arg-type]  # a dict reads like an asyncpg.Record here
    expected = HistoryOut(
        symbol="AAPL",
        timeframe=timeframe,  # type: ignore[arg-type]
        mode="postgresql",
        sources=sources,
        count=len(found.rows),
        bars=[bar_out(r, timeframe) for r in found.rows],  # type: ignore[arg-type]
    ).model_dump_json()
    encoded = history_json("AAPL", timeframe, "postgresql", found)
    assert json.dumps(json.loads(encoded)) == json.dumps(json.loads(expected))  # order, keys, values
