"""The kept minutes' JSON spelled once (storage/fragments.py, migrations/postgresql/0025_kept_bar_json.sql):
/history's 1-minute responses are the same bytes whether a minute's JSON was spelled before or is
spelled when read, and after every write that changes a spelled minute (a late tick, a stored bar)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.helpers import wait_until
from tests.storage_fixtures import migrated_database, minute_bar
from tradebot.api.routes_history import history_json
from tradebot.common.db import drop_database
from tradebot.common.models import Tick
from tradebot.storage import queries
from tradebot.storage.fragments import spell_all, spell_loop, spell_minutes
from tradebot.storage.writer import write_events

OPEN = datetime(2024, 3, 8, 14, 30, tzinfo=UTC)  # a Friday: the window spans a weekend and a DST change
LATER = datetime(2024, 3, 20, tzinfo=UTC)


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    yield await migrated_database(database_url, "kept_bar_json_test")
    await drop_database(database_url, "kept_bar_json_test")


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def _ticks(symbol: str, rng: random.Random, count: int = 600) -> list[Tick]:
    """Trades in three sessions with gaps between minutes, some prices with many digits or near
    ties (not plain: encoded from rows), most at cents."""
    ticks = []
    for i in range(count):
        day, minute = divmod(i, 200)
        price = rng.choice([100 + rng.randrange(1000) / 100, 0.5 + rng.random(), 12.005, 3456.78 + rng.random() / 100])
        ts = OPEN + timedelta(days=day * 3, minutes=minute % 100 * 3, seconds=rng.randrange(60), microseconds=i)
        ticks.append(Tick.create(symbol, price, rng.choice([1, 3, 7.5, 100]), ts, source="bench", trade_id=i))
    return ticks


async def _response(conn: asyncpg.Connection, symbol: str, **window: object) -> bytes:
    found = await queries.series(conn, symbol, "1m", kept=True, encoded=True, **window)  # type: ignore[arg-type]
    return history_json(symbol, "1m", "postgresql", found)


async def _on_the_fly(conn: asyncpg.Connection, symbol: str, **window: object) -> bytes:
    """The same request aggregating the ticks on the fly: no kept minute, no stored JSON."""
    found = await queries.series(conn, symbol, "1m", encoded=True, **window)  # type: ignore[arg-type]
    return history_json(symbol, "1m", "postgresql", found)


def _windows(rng: random.Random) -> list[dict[str, object]]:
    windows: list[dict[str, object]] = [{"now": LATER}, {"now": LATER, "limit": 7}, {"start": OPEN, "now": LATER}]
    for _ in range(12):
        moment = OPEN + timedelta(days=rng.randrange(8), minutes=rng.randrange(-100, 400), seconds=rng.randrange(60))
        limit = rng.choice([1, 5, 50, 1000])
        windows += [
            {"start": moment, "limit": limit, "now": LATER},
            {"end": moment, "limit": limit, "now": LATER},
            {"limit": limit, "now": moment},  # minutes still open at ``now``, stored bars of open minutes
        ]
    return windows


async def _unspelled(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM ohlcv_kept_1m WHERE bar_json IS NULL")
    return count


async def test_responses_are_the_same_bytes_spelled_or_not(conn: asyncpg.Connection) -> None:
    rng = random.Random(25)
    await write_events(conn, _ticks("MIX", rng))
    # stored minutes: over ticked minutes, in the gaps between them, and a zero-volume one
    bars = [minute_bar("MIX", OPEN + timedelta(minutes=m), "bench", 90.0 + m, 50.0) for m in (0, 3, 4, 7, 301)]
    bars.append(minute_bar("MIX", OPEN + timedelta(days=3, minutes=6), "bench", 95.25, 0.0))
    await write_events(conn, bars)
    windows = _windows(rng)
    before = [await _response(conn, "MIX", **w) for w in windows]
    assert await spell_all(conn) > 0
    assert await _unspelled(conn) == 0
    assert await conn.fetchval("SELECT count(*) FROM ohlcv_kept_1m WHERE bar_json = ''") > 0  # not plain
    after = [await _response(conn, "MIX", **w) for w in windows]
    assert after == before
    assert after == [await _on_the_fly(conn, "MIX", **w) for w in windows]


async def test_only_cents_responses_are_joined_from_stored_json(conn: asyncpg.Connection) -> None:
    rng = random.Random(3)
    ticks = [
        Tick.create(
            "CENTS", 100 + rng.randrange(1000) / 100, 10, OPEN + timedelta(seconds=17 * i), source="bench", trade_id=i
        )
        for i in range(500)
    ]
    await write_events(conn, ticks)
    await spell_all(conn)
    found = await queries.series(conn, "CENTS", "1m", kept=True, encoded=True, start=OPEN, now=LATER)
    assert found.encoded is not None
    assert found.bar_count == 142
    stored = await conn.fetch("SELECT bar_json FROM ohlcv_kept_1m WHERE symbol = 'CENTS' ORDER BY bucket")
    assert found.encoded == ",".join(row["bar_json"] for row in stored)
    assert history_json("CENTS", "1m", "postgresql", found) == await _on_the_fly(conn, "CENTS", start=OPEN, now=LATER)


async def test_a_late_tick_forgets_its_minutes_json(conn: asyncpg.Connection) -> None:
    ticks = [
        Tick.create("LATE", 100.0 + i, 10, OPEN + timedelta(seconds=20 * i), source="bench", trade_id=i)
        for i in range(9)
    ]
    await write_events(conn, ticks)
    await spell_all(conn)
    assert await _unspelled(conn) == 0
    late = Tick.create("LATE", 250.0, 5, OPEN + timedelta(minutes=1, seconds=1), source="bench", trade_id=99)
    await write_events(conn, [late])
    forgotten = await conn.fetch("SELECT bucket FROM ohlcv_kept_1m WHERE bar_json IS NULL")
    assert [row["bucket"] for row in forgotten] == [OPEN + timedelta(minutes=1)]
    body = await _response(conn, "LATE", start=OPEN, now=LATER)
    assert b'"high":250.0' in body
    assert body == await _on_the_fly(conn, "LATE", start=OPEN, now=LATER)
    await spell_all(conn)
    assert await _response(conn, "LATE", start=OPEN, now=LATER) == body


async def test_a_stored_bar_wins_a_spelled_minute(conn: asyncpg.Connection) -> None:
    ticks = [
        Tick.create("WON", 100.0, 10, OPEN + timedelta(seconds=20 * i), source="bench", trade_id=i) for i in range(9)
    ]
    await write_events(conn, ticks)
    await spell_all(conn)
    await write_events(conn, [minute_bar("WON", OPEN + timedelta(minutes=2), "bench", 77.0, 40.0)])
    body = await _response(conn, "WON", start=OPEN, now=LATER)
    assert b'"open":77.0' in body
    assert body == await _on_the_fly(conn, "WON", start=OPEN, now=LATER)
    newest = await _response(conn, "WON", limit=2, now=LATER)
    assert b'"open":77.0' in newest
    assert newest == await _on_the_fly(conn, "WON", limit=2, now=LATER)


async def test_open_minutes_are_left_to_the_read(conn: asyncpg.Connection) -> None:
    now = await conn.fetchval("SELECT now()")
    await write_events(conn, [Tick.create("NOW", 100.0, 1, now, source="bench", trade_id=1)])
    assert await spell_minutes(conn) == 0
    assert await _unspelled(conn) == 1


async def test_a_minute_whose_spelling_overflows_is_read_as_before(conn: asyncpg.Connection) -> None:
    await write_events(conn, [Tick.create("BIG", 100.0, 1, OPEN, source="bench", trade_id=1)])
    # a price whose scaled value (x 100) leaves double precision: the read fails with the reason, as before
    await conn.execute(
        "INSERT INTO ticks (symbol, ts, id, price, size, source) VALUES ('BIG', $1, 'huge', 1e307, 1, 'bench')",
        OPEN + timedelta(minutes=1),
    )
    with pytest.raises(queries.StoredDataError):
        await _response(conn, "BIG", start=OPEN, now=LATER)
    assert await spell_all(conn) == 2
    assert (
        await conn.fetchval("SELECT bar_json FROM ohlcv_kept_1m WHERE bucket = $1", OPEN + timedelta(minutes=1)) == ""
    )
    with pytest.raises(queries.StoredDataError):
        await _response(conn, "BIG", start=OPEN, now=LATER)
    assert (await _response(conn, "BIG", start=OPEN, limit=1, now=LATER)).count(b"timestamp") == 1


async def test_the_storage_workers_loop_spells_what_closed(dsn: str, conn: asyncpg.Connection) -> None:
    ticks = [
        Tick.create("LOOP", 100.0, 10, OPEN + timedelta(seconds=40 * i), source="bench", trade_id=i) for i in range(9)
    ]
    await write_events(conn, ticks)
    stop, counters = asyncio.Event(), Counter[str]()
    loop = asyncio.create_task(spell_loop(dsn, stop, counters))
    try:
        await wait_until(lambda: counters["minutes_spelled"] == 6, what="the loop to spell the six minutes")
        assert await _unspelled(conn) == 0
    finally:
        stop.set()
        await loop


class CountingConnection(asyncpg.Connection):
    """A connection that counts the statements sent through it."""

    statements = 0

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return await super().fetch(*args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return await super().fetchrow(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return await super().fetchval(*args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return await super().execute(*args, **kwargs)


@pytest.fixture
async def counted(dsn: str) -> AsyncIterator[CountingConnection]:
    connection = await asyncpg.connect(dsn, connection_class=CountingConnection)
    yield connection
    await connection.close()


async def _statements(
    conn: CountingConnection, symbol: str, **window: object
) -> tuple[bytes, int, queries.HistoryStamp | None]:
    """The response to a 1m request of the kept series read with its stamp, how many statements
    that took, and the stamp."""
    before = conn.statements
    found = await queries.series(conn, symbol, "1m", kept=True, encoded=True, stamped=True, **window)  # type: ignore[arg-type]
    return history_json(symbol, "1m", "postgresql", found), conn.statements - before, found.stamp


async def test_a_window_of_kept_minutes_is_one_statement_with_its_stamp(
    conn: asyncpg.Connection, counted: CountingConnection
) -> None:
    rng = random.Random(8)
    await write_events(conn, [t for t in _ticks("ONE", rng) if t.price == round(t.price, 2)])
    await spell_all(conn)
    for window in _windows(rng):
        body, statements, stamp = await _statements(counted, "ONE", **window)
        assert body == await _on_the_fly(conn, "ONE", **window), window
        # the stamp is read in the statement of the bars: what history_stamp reads alone
        assert stamp == await queries.history_stamp(conn, "ONE")
        assert statements == 1 or b'"count":0' in body, window  # an empty window is read the long way


async def test_minutes_not_spelled_yet_are_spelled_from_the_table_in_the_same_statement(
    conn: asyncpg.Connection, counted: CountingConnection
) -> None:
    # The statement reads the minutes' time and JSON from the primary key alone; a minute without
    # its JSON (open, or reset by a late tick) is joined back for its values.
    rng = random.Random(10)
    await write_events(conn, [t for t in _ticks("HALF", rng) if t.price == round(t.price, 2)])
    await spell_all(conn)
    await conn.execute(
        "UPDATE ohlcv_kept_1m SET bar_json = NULL WHERE symbol = 'HALF' AND extract(minute FROM bucket) < 20"
    )
    assert 0 < await _unspelled(conn) < await conn.fetchval("SELECT count(*) FROM ohlcv_kept_1m")
    for window in _windows(rng):
        body, statements, _ = await _statements(counted, "HALF", **window)
        assert body == await _on_the_fly(conn, "HALF", **window), window
        assert statements == 1 or b'"count":0' in body, window


async def test_what_the_kept_minutes_cannot_answer_alone_is_read_the_long_way(
    conn: asyncpg.Connection, counted: CountingConnection
) -> None:
    rng = random.Random(9)
    for symbol in ("STORED", "MIXED", "OFF", "PLAIN"):
        await write_events(conn, [t for t in _ticks(symbol, rng) if t.price == round(t.price, 2)])
    await write_events(conn, [minute_bar("STORED", OPEN + timedelta(minutes=9), "bench", 91.0, 30.0)])
    mock = Tick.create("MIXED", 55.0, 2, OPEN + timedelta(minutes=1, seconds=5), source="mock", trade_id=1)
    await write_events(conn, [mock])  # real data wins: the series leaves the mock tick out
    await conn.execute("INSERT INTO kept_series_off (symbol, reason) VALUES ('OFF', 'test')")
    await spell_all(conn)
    cases: list[tuple[str, dict[str, object]]] = [
        ("STORED", {"start": OPEN, "now": LATER}),  # a stored bar among the kept minutes
        ("STORED", {"now": LATER}),
        ("MIXED", {"start": OPEN, "now": LATER}),  # a series of some of the sources
        ("MIXED", {"start": OPEN, "now": LATER, "source": "mock"}),
        ("OFF", {"start": OPEN, "now": LATER}),  # the kept series is off
    ]
    for symbol, window in cases:
        body, statements, _ = await _statements(counted, symbol, **window)
        assert body == await _on_the_fly(conn, symbol, **window), (symbol, window)
        assert statements > 1, (symbol, window)
    with pytest.raises(queries.UnknownSourceError):  # no such source: the long way says so
        await _statements(counted, "PLAIN", start=OPEN, now=LATER, source="mock")
    with pytest.raises(queries.UnknownSymbolError):
        await _statements(counted, "NOSUCH", start=OPEN, now=LATER)


async def test_a_stored_bar_over_a_minute_that_cannot_be_spelled_still_hides_it(
    conn: asyncpg.Connection, counted: CountingConnection
) -> None:
    await write_events(conn, [Tick.create("HID", 100.0, 1, OPEN, source="bench", trade_id=1)])
    await conn.execute(
        "INSERT INTO ticks (symbol, ts, id, price, size, source) VALUES ('HID', $1, 'huge', 1e307, 1, 'bench')",
        OPEN + timedelta(minutes=1),
    )
    await write_events(conn, [minute_bar("HID", OPEN + timedelta(minutes=1), "bench", 99.0, 10.0)])
    # the stored bar wins the minute whose spelling overflows: the response works, as the long way's
    body, _, _ = await _statements(counted, "HID", start=OPEN, now=LATER)
    assert b'"open":99.0' in body
    assert body == await _on_the_fly(conn, "HID", start=OPEN, now=LATER)
