"""The periodic activity line: rates from heartbeats, counts from the tables, P&L from the account."""

from __future__ import annotations

import json

import asyncpg

from tradebot.common.bus import Bus
from tradebot.common.streams import EXECUTION_ROLE, checkpoint_key, heartbeat_key
from tradebot.monitor.summary import FeedCount, Snapshot, snapshot, summary_line, ticks_per_second, with_rates
from tradebot.storage.schema import apply_migrations

ACCOUNT = {"starting_cash": 100_000.0, "cash": 97_796.789, "commissions": 0.1, "positions": {}, "seen_order_ids": []}


def _at(feeds: dict[str, tuple[int, float]], account: dict | None = None) -> Snapshot:
    counts = {key: FeedCount(ticks, at) for key, (ticks, at) in feeds.items()}
    return Snapshot(counts, signals=212, fills=205, rejected=7, account=account)


def test_rate_is_ticks_between_two_heartbeats_and_survives_a_feed_restart() -> None:
    first = with_rates(None, _at({"a": (100, 0.0)}))
    assert ticks_per_second(first) == 0  # one beat is no rate yet
    second = with_rates(first, _at({"a": (5100, 10.0)}))
    assert ticks_per_second(second) == 500
    no_new_beat = with_rates(second, _at({"a": (5100, 10.0)}))
    assert ticks_per_second(no_new_beat) == 500  # a summary between two beats keeps the last rate
    restarted = with_rates(no_new_beat, _at({"a": (300, 12.0), "b": (200, 12.0)}))
    assert ticks_per_second(restarted) == 0  # a restarted feed and a new one wait for their next beat


def test_the_line_names_rate_counts_pnl_and_equity() -> None:
    account = {"realised_pnl": -1.004, "unrealised_pnl": -2.2061, "equity": 99_996.7899}
    now = with_rates(_at({"a": (0, 0.0)}), _at({"a": (4980, 10.0)}, account))
    assert summary_line(now) == (
        "activity: 498 ticks/s · 212 signals · 205 fills, 7 rejected · P&L -$3.21 (realised -$1.00) · equity $99,996.79"
    )
    assert summary_line(_at({})).endswith("no order executed yet")


async def test_snapshot_reads_heartbeats_tables_and_the_account(bus: Bus, clean_database: str) -> None:
    await apply_migrations(clean_database)
    beat = {"role": "market_data", "updated_at": "2026-12-01T14:30:00+00:00", "counters": {"published": 1234}}
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
    assert [feed.ticks for feed in taken.feeds.values()] == [1234]
    assert (taken.signals, taken.fills, taken.rejected) == (0, 0, 1)
    assert taken.account is not None
    assert taken.account["cash"] == 97_796.789
