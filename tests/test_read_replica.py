"""DATABASE_READ_URL: the API reads from the replica, migrates and checks health on the primary.

A second database on the test server stands in for the replica. It holds different rows from the
primary (MSFT there, AAPL here), so every answer shows which database it came from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC

import asyncpg
import httpx
import pytest

from tests.storage_fixtures import DAYS, migrated_database, session_database, session_ticks
from tradebot.api.history_service import create_app
from tradebot.common.config import Settings, SettingsError, load_settings
from tradebot.common.db import drop_database, recreate_database, with_database
from tradebot.common.models import Order, OrderEvent, Signal
from tradebot.storage.writer import write_events

PRIMARY_ONLY = session_ticks("AAPL", seed=1)
REPLICA_ONLY = session_ticks("MSFT", seed=2, step_s=53)
FILL_AT = DAYS[1].replace(hour=11).astimezone(UTC)
REPLICA_SIGNAL = Signal(
    id="replica-signal",
    symbol="MSFT",
    timestamp=FILL_AT,
    side="buy",
    price=200.0,
    confidence=0.5,
    strategy="ma_crossover_5_20",
    tick_id="replica-tick",
)
REPLICA_ORDER = Order.from_signal(REPLICA_SIGNAL, quantity=5)
REPLICA_FILL = OrderEvent(
    id="replica-fill",
    symbol="MSFT",
    timestamp=FILL_AT,
    client_order_id=REPLICA_ORDER.id,
    status="filled",
    side="buy",
    quantity=5,
    price=200.0,
    commission=0.0,
)


@dataclass
class Api:
    client: httpx.AsyncClient
    primary: str
    replica: str


async def _write(dsn: str, events: list) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, events)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def api(database_url: str, redis_url: str) -> AsyncIterator[Api]:
    """The API with a fresh (unmigrated) primary holding AAPL later, and a replica holding MSFT."""
    primary_name, replica_name = session_database("replica_test_primary"), session_database("replica_test_replica")
    primary = await recreate_database(database_url, primary_name)
    replica = await migrated_database(database_url, replica_name)  # as streaming replication would copy it
    await _write(replica, [*REPLICA_ONLY, REPLICA_SIGNAL, REPLICA_ORDER, REPLICA_FILL])
    app = create_app(Settings(_env_file=None, database_url=primary, database_read_url=replica, redis_url=redis_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        await _write(primary, PRIMARY_ONLY)  # the lifespan migrated the primary: it can take rows now
        yield Api(client, primary, replica)
    await drop_database(database_url, primary_name)
    await drop_database(database_url, replica_name)


async def test_symbols_come_from_the_replica(api: Api) -> None:
    symbols = (await api.client.get("/symbols")).json()["symbols"]
    assert [s["symbol"] for s in symbols] == ["MSFT"]


async def test_history_and_ohlcv_come_from_the_replica(api: Api) -> None:
    window = {"timeframe": "1d", "start": "2024-03-08T00:00:00Z", "end": "2024-03-14T00:00:00Z"}
    history = await api.client.get("/history/MSFT", params=window)
    assert history.status_code == 200
    assert len(history.json()["bars"]) == len(DAYS)
    assert (await api.client.get("/ohlcv/MSFT", params=window)).status_code == 200
    assert (await api.client.get("/history/AAPL", params=window)).status_code == 404  # only on the primary


async def test_stats_come_from_the_replica(api: Api) -> None:
    window = {"start": "2024-03-08T00:00:00Z", "end": "2024-03-14T00:00:00Z"}
    assert (await api.client.get("/stats/MSFT", params=window)).status_code == 200
    assert (await api.client.get("/stats/AAPL", params=window)).status_code == 404


async def test_udf_symbols_and_marks_come_from_the_replica(api: Api) -> None:
    assert (await api.client.get("/udf/search", params={"query": ""})).json()[0]["symbol"] == "MSFT"
    start = int(FILL_AT.timestamp())
    params = {"symbol": "MSFT", "from": start, "to": start + 60, "resolution": "1"}
    assert (await api.client.get("/udf/marks", params=params)).json()["id"] == ["replica-fill"]


async def test_activity_comes_from_the_replica(api: Api) -> None:
    assert [s["id"] for s in (await api.client.get("/signals")).json()["signals"]] == ["replica-signal"]
    assert [o["id"] for o in (await api.client.get("/orders")).json()["orders"]] == [REPLICA_ORDER.id]
    assert [f["id"] for f in (await api.client.get("/fills")).json()["fills"]] == ["replica-fill"]


async def test_migrations_ran_on_the_primary_only(api: Api) -> None:
    conn = await asyncpg.connect(api.primary)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ticks") == len(PRIMARY_ONLY)
    finally:
        await conn.close()


async def test_health_checks_the_primary_and_the_replica(api: Api) -> None:
    health = (await api.client.get("/health")).json()
    assert health["database"]["reachable"] is True
    assert health["database"]["replica_reachable"] is True


async def test_without_a_replica_health_reports_none_for_it(settings: Settings) -> None:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        assert app.state.read_pool is app.state.pool
        assert (await client.get("/health")).json()["database"]["replica_reachable"] is None


async def test_an_unreachable_replica_stops_start_up(database_url: str) -> None:
    primary = await migrated_database(database_url, session_database("replica_test_lonely"))
    missing = with_database(database_url, "no_such_replica_database")
    app = create_app(Settings(_env_file=None, database_url=primary, database_read_url=missing))
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        async with app.router.lifespan_context(app):
            pass
    await drop_database(database_url, session_database("replica_test_lonely"))


def test_the_replica_url_is_a_secret_setting_never_echoed() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(database_read_url=["postgresql://u:hunter2@replica/db"])
    assert "DATABASE_READ_URL" in str(error.value)
    assert "hunter2" not in str(error.value)
