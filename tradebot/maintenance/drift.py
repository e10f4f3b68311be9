"""Start-up warnings when stored state disagrees with the settings, naming the setting and the way out.

The paper account, the mock feed's cursor and the tick partitions outlive a restart on purpose
(nothing is lost), so a changed STARTING_CASH, symbol universe or TICK_PARTITIONS does not apply to
them by itself. Saying so at start-up beats a newcomer wondering why a setting "does nothing".
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis

from tradebot.broker.checkpoint import read_account_snapshot
from tradebot.common.bus.connection import connect
from tradebot.common.config import Settings
from tradebot.common.streams import (
    STORED_SETTINGS_KEY,
    TICKS_PREFIX,
    producer_cursor_key,
    tick_partition,
)

log = logging.getLogger("tradebot.drift")

RESET_HINT = (
    "to start over with the settings: stop tradebot, then `tradebot reset` (--keep-history keeps ticks and bars)"
)
SHOWN_SYMBOLS = 5


def _some(symbols: set[str]) -> str:
    listed = ", ".join(sorted(symbols)[:SHOWN_SYMBOLS])
    return listed + (f" and {len(symbols) - SHOWN_SYMBOLS} more" if len(symbols) > SHOWN_SYMBOLS else "")


def account_drift(account: dict[str, Any] | None, settings: Settings, universe: set[str] | None) -> list[str]:
    """The stored paper account against STARTING_CASH and the symbol universe."""
    if account is None:
        return []
    found = []
    paper = account.get("broker", "paper") == "paper"  # a real broker's account did not start at STARTING_CASH
    if paper and abs(account["starting_cash"] - settings.starting_cash) > 0.005:
        found.append(
            f"STARTING_CASH is {settings.starting_cash:,.2f} but the stored paper account started with "
            f"{account['starting_cash']:,.2f} and keeps it (cash now {account['cash']:,.2f})"
        )
    held = {symbol for symbol, p in account["positions"].items() if p["quantity"]}
    if universe is not None and held - universe:
        found.append(
            f"SYMBOL_MODE/SYMBOLS leave out {len(held - universe)} symbols the stored paper account still holds "
            f"({_some(held - universe)}); they stay in /account until sold or reset"
        )
    return found


def cursor_drift(cursor: dict[str, Any] | None, settings: Settings, universe: set[str] | None) -> list[str]:
    """The mock feed's stored cursor against MOCK_SEED and the symbol universe."""
    if cursor is None:
        return []
    found = []
    if cursor.get("seed") is not None and cursor["seed"] != settings.mock_seed:
        found.append(
            f"MOCK_SEED is {settings.mock_seed} but the stored mock feed was started with seed {cursor['seed']}; "
            "it continues its price paths from where they are"
        )
    dropped = set(cursor.get("paths", {})) - (universe or set())
    if universe is not None and dropped:
        found.append(
            f"SYMBOL_MODE/SYMBOLS now trade {len(universe)} symbols; {len(dropped)} earlier ones ({_some(dropped)}) "
            "are no longer fed, but their stored ticks and bars still show in /symbols and /history"
        )
    return found


def partition_drift(stored: dict[str, Any] | None, tick_streams: list[str], settings: Settings) -> list[str]:
    """TICK_PARTITIONS against the partitions the stored streams were written with."""
    before = (stored or {}).get("tick_partitions")
    beyond = sorted(s for s in tick_streams if tick_partition(s) >= settings.tick_partitions)
    if before is not None and before != settings.tick_partitions:
        return [
            f"TICK_PARTITIONS is {settings.tick_partitions} but the stored streams were written with {before}: "
            "symbols now map to other partitions while unread ticks wait in the old ones; set TICK_PARTITIONS="
            f"{before} to keep the data as it is"
        ]
    if beyond:
        streams = _some(set(beyond))
        return [f"TICK_PARTITIONS is {settings.tick_partitions} but stored tick streams exist beyond it ({streams})"]
    return []


async def stored_state_drift(client: aioredis.Redis, settings: Settings, universe: set[str] | None) -> list[str]:
    """Every disagreement between what Redis holds and the settings (empty when they agree)."""
    # One GET per key: on a cluster they live in different slots (MGET would be refused).
    cursor, stored = [await client.get(key) for key in (producer_cursor_key("mock"), STORED_SETTINGS_KEY)]
    streams = [key async for key in client.scan_iter(match=f"{TICKS_PREFIX}:{{*}}", count=500)]
    loaded = [json.loads(raw) if raw else None for raw in (cursor, stored)]
    return [
        *account_drift(await read_account_snapshot(client), settings, universe),
        *cursor_drift(loaded[0], settings, universe),
        *partition_drift(loaded[1], [s for s in streams if s.rsplit(":", 1)[1].strip("{}").isdigit()], settings),
    ]


async def record_settings(client: aioredis.Redis, settings: Settings) -> None:
    """Remember the settings the data is being written with, unless an earlier run did."""
    await client.set(STORED_SETTINGS_KEY, json.dumps({"tick_partitions": settings.tick_partitions}), nx=True)


def warn_about_drift(settings: Settings) -> list[str]:
    """Log one warning per disagreement (and how to reset); record the settings of a fresh start."""
    assert settings.redis_url

    async def check() -> list[str]:
        client = connect(settings.redis_url or "", cluster=settings.redis_cluster)
        try:
            found = await stored_state_drift(client, settings, _universe(settings))
            await record_settings(client, settings)
            return found
        finally:
            await client.aclose()

    found = asyncio.run(check())
    for problem in found:
        log.warning("stored state disagrees with a setting: %s; %s", problem, RESET_HINT)
    return found


def _universe(settings: Settings) -> set[str] | None:
    from tradebot.universe import resolve_symbols

    try:
        return set(resolve_symbols(settings))
    except (SystemExit, OSError, ValueError):  # the workers report a universe that cannot be resolved
        return None
