"""The periodic activity line: rates from heartbeats, counts from the tables, P&L from the account."""

from __future__ import annotations

import json

import asyncpg

from tradebot.common.bus import Bus
from tradebot.common.streams import EXECUTION_ROLE, checkpoint_key, heartbeat_key
from tradebot.monitor.summary import Snapshot, snapshot, summary_line, ticks_per_second
from tradebot.storage.schema import apply_migrations

ACCOUNT = {"starting_cash": 100_000.0, "cash": 97_796.789, "commissions": 0.1, "positions": {}, "seen_order_ids": []}


def _at(at: float, ticks: dict[str, int], account: dict | None = None) -> Snapshot:
    return Snapshot(at, ticks, signals=212, fills=205, rejected=7, account=account)


def test_rate_is_ticks_published_between_two_snapshots_and_survives_a_feed_restart() -> None:
    assert ticks_per_second(None, _at(10, {"a": 500})) == 0
    assert ticks_per_second(_at(0, {"a": 100}), _at(10, {"a": 5100})) == 500
    assert ticks_per_second(_at(0, {"a": 9000}), _at(10, {"a": 300, "b": 200})) == 50  # a restarted, b is new


def test_the_line_names_rate_counts_pnl_and_equity() -> None:
    account = {"realised_pnl": -1.004, "unrealised_pnl": -2.2061, "equity": 99_996.7899}
    line = summary_line(_at(0, {"a": 0}), _at(10, {"a": 4980}, account))
    assert line == (
        "activity: 498 ticks/s · 212 signals · 205 fills, 7 rejected · P&L -$3.21 (realised -$1.00) · equity $99,996.79"
    )
    assert summary_line(None, _at(0, {})).endswith("no order executed yet")


async def test_snapshot_reads_heartbeats_tables_and_the_account(bus: Bus, clean_database: str) -> None:
    await apply_migrations(clean_database)
    beat = {"role": "market_data", "consumer": "h-1", "counters": {"published": 1234}}
    await bus.redis.set(heartbeat_key("market_data", "h-1"), json.dumps(beat))
    await bus.redis.set(heartbeat_key("storage", "h-2"), json.dumps({"role": "storage", "counters": {"handled": 9}}))
    await bus.redis.set(checkpoint_key(EXECUTION_ROLE, 0), json.dumps(ACCOUNT))
    conn = await asyncpg.connect(clean_database)
    try:
        await conn.execute(
            "INSERT INTO fills VALUES ('f1', now(), 'co-1', 'AAPL', 'rejected', 'buy', 10, NULL, 0, 'no cash')"
        )
    finally:
        await conn.close()
    taken = await snapshot(bus.redis, clean_database)
    assert list(taken.ticks_by_worker.values()) == [1234]
    assert (taken.signals, taken.fills, taken.rejected) == (0, 0, 1)
    assert taken.account is not None and taken.account["cash"] == 97_796.789
