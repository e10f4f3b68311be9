"""`tradebot dlq`: dead letters are listed, shown, replayed once (same event ids) and dropped."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from tradebot.cli import app
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import encode_entries
from tradebot.common.config import Settings
from tradebot.common.models import Tick
from tradebot.common.streams import dead_letter_stream, tick_stream_for
from tradebot.storage import timeseries_service
from tradebot.storage.schema import apply_migrations

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
POISON = "test:AAPL:7"
_REJECT_ONE_TICK = f"""
CREATE OR REPLACE FUNCTION test_reject_tick() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id = '{POISON}' THEN RAISE EXCEPTION 'rejected by a rule' USING ERRCODE = '23514'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_reject_tick BEFORE INSERT ON ticks FOR EACH ROW EXECUTE FUNCTION test_reject_tick();
"""


@pytest.fixture
def cli_env(settings: Settings, clean_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name, value in {
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": clean_database,
        "DATA_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value or "")
    return settings.model_copy(update={"database_url": clean_database, "max_deliveries": 2, "burst": True})


def dlq(*args: str) -> str:
    result = CliRunner().invoke(app, ["dlq", *args])
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_replayed_dead_letter_is_applied_once(cli_env: Settings, bus: Bus) -> None:
    await apply_migrations(cli_env.database_url or "")
    conn = await asyncpg.connect(cli_env.database_url)
    sent = [Tick.create("AAPL", 100 + i, 1, START + timedelta(seconds=i), source="test", trade_id=i) for i in range(20)]
    stream = tick_stream_for("AAPL", cli_env.tick_partitions)
    try:
        await conn.execute(_REJECT_ONE_TICK)
        await bus.publish((stream, tick) for tick in sent)
        await timeseries_service.run(cli_env, stop=asyncio.Event())
        assert await conn.fetchval("SELECT count(*) FROM ticks") == 19
        await conn.execute("DROP TRIGGER test_reject_tick ON ticks")  # the cause is fixed

        assert await asyncio.to_thread(dlq, "list") == f"{dead_letter_stream(stream)}\t1\n"
        shown = await asyncio.to_thread(dlq, "show", stream)
        assert "CheckViolationError: rejected by a rule" in shown
        [record] = await bus.dead_letters(dead_letter_stream(stream))  # the poison's entry, with its neighbours
        assert POISON in record.payload["data"]
        record_id = shown.split()[0]
        replayed = await asyncio.to_thread(dlq, "replay", stream, record_id)
        assert replayed == f"replayed 1 record(s) of {dead_letter_stream(stream)}\n"
        assert "replayed 0" in await asyncio.to_thread(dlq, "replay", stream, "--all")  # nothing twice
        await timeseries_service.run(cli_env, stop=asyncio.Event())
        assert await conn.fetchval("SELECT count(*) FROM ticks") == 20
        assert await conn.fetchval("SELECT count(*) FROM ticks WHERE id = $1", POISON) == 1
        assert await bus.redis.xlen(dead_letter_stream(stream)) == 0
    finally:
        await conn.execute("DROP TRIGGER IF EXISTS test_reject_tick ON ticks")
        await conn.close()


async def test_dropped_dead_letters_are_gone_and_the_rest_stay(cli_env: Settings, bus: Bus) -> None:
    dead = dead_letter_stream("test.stream")
    for i in range(3):
        await bus.dead_letter("g", "test.stream", f"{i}-1", {"garbage": str(i)}, "unsupported schema version None")
    records = await bus.dead_letters(dead)
    assert "dropped 1 record(s)" in await asyncio.to_thread(dlq, "drop", "test.stream", records[0].record_id)
    assert [r.record_id for r in await bus.dead_letters(dead)] == [r.record_id for r in records[1:]]
    result = await asyncio.to_thread(CliRunner().invoke, app, ["dlq", "drop", "test.stream"])
    assert result.exit_code != 0
    assert "--all" in result.output
    assert "dropped 2 record(s)" in await asyncio.to_thread(dlq, "drop", dead, "--all")


async def test_a_malformed_tick_of_a_batch_is_replayed_alone_and_nothing_is_stored_twice(
    cli_env: Settings, bus: Bus
) -> None:
    await apply_migrations(cli_env.database_url or "")
    conn = await asyncpg.connect(cli_env.database_url)
    sent = [Tick.create("AAPL", 100 + i, 1, START + timedelta(seconds=i), source="test", trade_id=i) for i in range(5)]
    stream = tick_stream_for("AAPL", cli_env.tick_partitions)
    fields = encode_entries([(stream, tick) for tick in sent])[0][1]
    rows = json.loads(fields["data"])
    rows[2][4] = -1  # a size no tick has
    try:
        entry_id = await bus.publish_raw(stream, {**fields, "data": json.dumps(rows)})
        await timeseries_service.run(cli_env, stop=asyncio.Event())
        assert await conn.fetchval("SELECT count(*) FROM ticks") == 4  # its neighbours
        [record] = await bus.dead_letters(dead_letter_stream(stream))
        assert (record.entry_id, record.index) == (entry_id, 2)
        assert f"{entry_id} tick 2  group=storage" in await asyncio.to_thread(dlq, "show", stream)
        assert "replayed 1" in await asyncio.to_thread(dlq, "replay", stream, "--all")
        [_, (_, replayed)] = await bus.redis.xrange(stream)
        assert json.loads(replayed["data"]) == [rows[2]]  # re-published alone: its neighbours are not read again
        await timeseries_service.run(cli_env, stop=asyncio.Event())
        assert await conn.fetchval("SELECT count(*) FROM ticks") == 4
        [again] = await bus.dead_letters(dead_letter_stream(stream))  # still malformed: one record, as before
        assert (again.index, again.reason) == (0, record.reason)
    finally:
        await conn.close()
