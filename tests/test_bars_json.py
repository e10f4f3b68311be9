"""/history's bars encoded by PostgreSQL (storage/bars_json.py) are the bars history_json encodes
from the rows, float for float, over stored data in every timeframe and window shape; bars whose
values rounding.rounded cannot decide by its fast arithmetic (ties, huge values) are encoded from
rows instead, never approximated."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.storage_fixtures import migrated_database
from tradebot.api.routes_history import history_json
from tradebot.common.db import drop_database
from tradebot.common.models import Tick
from tradebot.storage import queries
from tradebot.storage.writer import write_events

OPEN = datetime(2024, 3, 8, 14, 30, tzinfo=UTC)  # a Friday: the window spans a DST change in New York
NOW = datetime(2024, 3, 13, tzinfo=UTC)
MODES = {"kept": {"kept": True}, "on the fly": {}}


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    dsn = await migrated_database(database_url, "bars_json_test")
    yield dsn
    await drop_database(database_url, "bars_json_test")


def _prices(rng: random.Random) -> list[float]:
    """Prices around the cent and sub-dollar boundaries, with many digits, and near-ties."""
    return [
        rng.choice([0.5, 0.9999, 1.0, 12.0, 101.005, 3456.78])
        + rng.choice([0.0, 1e-9, rng.random() / 100, rng.random(), 0.00005, 0.005])
        for _ in range(400)
    ]


def _ticks(symbol: str, prices: list[float], rng: random.Random) -> list[Tick]:
    ticks = []
    for i, price in enumerate(prices):
        day, minute = divmod(i, 80)
        ts = OPEN + timedelta(days=day, minutes=minute % 40 * 7, seconds=rng.randrange(60), microseconds=i)
        ticks.append(Tick.create(symbol, price, rng.choice([1, 3, 7.5, 100, 1e-3]), ts, source="bench", trade_id=i))
    return ticks


async def _both(conn: asyncpg.Connection, symbol: str, timeframe: str, **window: object) -> tuple[bytes, bytes, bool]:
    args = {"limit": 50, "now": NOW, **window}
    encoded = await queries.series(conn, symbol, timeframe, encoded=True, **args)  # type: ignore[arg-type]
    rows = await queries.series(conn, symbol, timeframe, **args)  # type: ignore[arg-type]
    assert rows.encoded is None
    return (
        history_json(symbol, timeframe, "postgresql", encoded),
        history_json(symbol, timeframe, "postgresql", rows),
        encoded.encoded is not None,
    )


def _same(first: bytes, second: bytes) -> None:
    """The same document: keys in the same order, the same values, every float the same double."""
    assert json.dumps(json.loads(first)) == json.dumps(json.loads(second))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("timeframe", ["1m", "5m", "1h", "1d"])
async def test_bars_encoded_by_the_query_equal_the_bars_encoded_from_rows(dsn: str, timeframe: str, mode: str) -> None:
    rng = random.Random(16)
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, _ticks("TRICKY", _prices(rng), rng))
        await write_events(conn, _ticks("CENTS", [100 + rng.randrange(1000) / 100 for _ in range(400)], rng))
        windows: list[dict[str, object]] = [
            {},
            {"start": OPEN},
            {"start": OPEN + timedelta(hours=30), "limit": 7},
            {"end": OPEN + timedelta(days=3), "limit": 3},
            {"start": NOW},  # nothing there
        ]
        taken = 0
        for symbol in ("TRICKY", "CENTS"):
            for window in windows:
                encoded, rows, plain = await _both(conn, symbol, timeframe, **window, **MODES[mode])
                _same(encoded, rows)
                taken += plain and symbol == "CENTS"
        # quoted prices: the query's encoding is used, not the fallback (the empty window runs no query)
        assert taken == len(windows) - 1
    finally:
        await conn.close()


@pytest.mark.parametrize("price", [1.125, 0.00125, 2.0**53, 1e20])
async def test_values_the_fast_rounding_cannot_decide_are_encoded_from_rows(dsn: str, price: float) -> None:
    """1.125 * 100 is an exact tie (round breaks it to even, 1.12), as is 0.00125 * 10000; 2**53 and 1e20
    lie beyond the doubles whose distance to an integer is exact: rounded defers to round."""
    conn = await asyncpg.connect(dsn)
    try:
        # as stored (a tick of a price this large would not pass validation today)
        await conn.execute(
            "INSERT INTO ticks (symbol, ts, id, price, size, source) VALUES ('EDGE', $1, 'bench:1', $2, 1, 'bench')",
            OPEN,
            price,
        )
        for timeframe in ("1m", "1d"):
            encoded, rows, plain = await _both(conn, "EDGE", timeframe, kept=True)
            assert not plain
            _same(encoded, rows)
            assert json.loads(encoded)["bars"][0]["open"] == round(price, 4 if price < 1 else 2)
    finally:
        await conn.close()


async def test_a_server_that_spells_floats_short_of_exact_gets_the_bars_from_rows(dsn: str) -> None:
    """With extra_float_digits = 0 float8's text has 15 digits, which need not read back as the double."""
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, [Tick.create("DIGITS", 123.45, 1, OPEN, source="bench", trade_id=1)])
        assert (await _both(conn, "DIGITS", "1m", kept=True))[2]
        await conn.execute("SET extra_float_digits = 0")
        encoded, rows, plain = await _both(conn, "DIGITS", "1m", kept=True)
        assert not plain
        _same(encoded, rows)
    finally:
        await conn.close()
