"""Every stream, group and key name in one place (like arq's constants)."""

from __future__ import annotations

import zlib
from enum import StrEnum

TICKS_PREFIX = "price.ticks"
BARS = "price.bars"
REPAIRED_TICKS = "price.ticks.repaired"  # trades gap repair fetched from REST: storage only, never strategies
SIGNALS = "signals"
ORDERS_NEW = "orders.new"
ORDER_EVENTS = "orders.events"
GAPS = "market.gaps"  # gaps a live feed could not publish (storage records them in the database)
CONTROL_EVENTS = "control.events"  # every change of trading state, audited (risk/control.py)
EQUITY_SAMPLES = "portfolio.equity"  # the account once a minute (the equity curve)
DEAD_LETTER_PREFIX = "dlq."
DEAD_LETTER_PATTERN = f"{DEAD_LETTER_PREFIX}*"


class Role(StrEnum):
    """Every worker role: the one list of their names (in logs, heartbeats, leases, ``tradebot worker``)."""

    MARKET_DATA = "market_data"
    ALPACA = "alpaca"
    POLYGON = "polygon"
    STRATEGY = "strategy"
    EXECUTION = "execution"
    STORAGE = "storage"
    API = "api"
    ALERTS = "alerts"


# A role's consumer group (and its lease and checkpoint keys) carry the role's name.
STORAGE_GROUP: str = Role.STORAGE
STRATEGY_ROLE: str = Role.STRATEGY
EXECUTION_ROLE: str = Role.EXECUTION

# Strategies switched on or off at run time (a hash: name -> "on" | "off"); off = nothing published.
STRATEGY_SWITCHES_KEY = "strategy:switches"

# The envelope fields of a bus entry: only bus.py reads or writes them.
SCHEMA_VERSION = "1"


def partition_for(symbol: str, partitions: int) -> int:
    """Stable partition of a symbol: crc32, never Python's per-process ``hash``."""
    return zlib.crc32(symbol.encode()) % partitions


def tick_stream(partition: int) -> str:
    """The stream holding the ticks of one partition."""
    return f"{TICKS_PREFIX}:{partition}"


def tick_streams(partitions: int) -> list[str]:
    """All tick partitions, in order."""
    return [tick_stream(p) for p in range(partitions)]


def tick_stream_for(symbol: str, partitions: int) -> str:
    """The partition stream a symbol's ticks go to."""
    return tick_stream(partition_for(symbol, partitions))


def storage_streams(partitions: int) -> list[str]:
    """Everything the storage worker persists."""
    return [
        *tick_streams(partitions),
        BARS,
        REPAIRED_TICKS,
        SIGNALS,
        ORDERS_NEW,
        ORDER_EVENTS,
        GAPS,
        CONTROL_EVENTS,
        EQUITY_SAMPLES,
    ]


def retained_streams(partitions: int) -> dict[str, tuple[str, ...]]:
    """Every stream the system trims by consumer progress, with the groups that must read it.

    An entry is trimmed only once all of these groups are done with it (see Bus.trim_consumed).
    """
    readers: dict[str, tuple[str, ...]] = {stream: (STORAGE_GROUP,) for stream in storage_streams(partitions)}
    for stream in tick_streams(partitions):
        readers[stream] = (STORAGE_GROUP, STRATEGY_ROLE)
    readers[ORDERS_NEW] = (STORAGE_GROUP, EXECUTION_ROLE)
    return readers


def readers_of(stream: str, partitions: int) -> tuple[str, ...]:
    """The groups that must read ``stream`` before it may be trimmed (none for unknown streams)."""
    return retained_streams(partitions).get(stream, ())


def dead_letter_stream(stream: str) -> str:
    """Where entries of ``stream`` go after they fail validation or too many deliveries."""
    return f"{DEAD_LETTER_PREFIX}{stream}"


def original_stream(dead_letters: str) -> str:
    """The stream whose entries a dead-letter stream holds."""
    return dead_letters.removeprefix(DEAD_LETTER_PREFIX)


GAP_PATTERN = "gap:*"


def gap_key(source: str, first: str) -> str:
    """A live feed's gap record (JSON: source, symbols, first, last, dropped, repair, repaired)."""
    return f"gap:{source}:{first}"


def lease_key(role: str, partition: int) -> str:
    """Who owns a partition of a stateful role (SET NX PX)."""
    return f"lease:{role}:{partition}"


def members_key(role: str) -> str:
    """Live workers of a role: sorted set scored by heartbeat expiry (ms)."""
    return f"members:{role}"


def checkpoint_key(role: str, partition: int) -> str:
    """The state of a partition, written together with the ack of the entries it includes."""
    return f"checkpoint:{role}:{partition}"


def checkpoint_parts_key(role: str, partition: int) -> str:
    """The state of a partition kept in parts (a hash, e.g. one field per symbol): a commit writes
    only the parts its batch changed."""
    return f"checkpoint_parts:{role}:{partition}"


def partition_consumer(partition: int) -> str:
    """Consumer name used by whoever owns a partition, so a new owner inherits its pending list."""
    return f"partition-{partition}"


def heartbeat_key(role: str, consumer: str) -> str:
    """A worker's TTL'd heartbeat, read by /health."""
    return f"heartbeat:{role}:{consumer}"


HEARTBEAT_PATTERN = "heartbeat:*"
PRODUCER_CURSOR_PREFIX = "cursor:"


def producer_cursor_key(name: str) -> str:
    """Where a producer (e.g. the mock feed) records how far it got, committed with its publish."""
    return f"{PRODUCER_CURSOR_PREFIX}{name}"


def publisher_sequence_key(source: str) -> str:
    """A live publisher's batch counter, compare-and-set with each batch so a retry never doubles it."""
    return f"publisher_seq:{source}"


def webhook_alert_key(alert_id: str) -> str:
    """Marks an incoming alert as published (kept for days), so a replayed alert is not traded twice."""
    return f"webhook:alert:{alert_id}"


def daily_summary_key(session: str) -> str:
    """Claims a session's daily summary (a short lease while it is sent, then "sent" for days), so
    every replica of the alerts role, restarted or not, sends it once."""
    return f"alerts:daily_summary:{session}"


def worker_down_key(role: str) -> str:
    """Set while a role is down and alerted (by whichever alerts replica saw it first)."""
    return f"alerts:worker_down:{role}"


def incidents_key(day: str) -> str:
    """A hash per New York day: role -> worker-down incidents, and ``started:<role>`` -> processes started."""
    return f"alerts:incidents:{day}"


def started_workers_key(day: str) -> str:
    """A set per New York day of the worker processes (role/consumer) seen started that day."""
    return f"alerts:started:{day}"


# Settings the stored data depends on (e.g. TICK_PARTITIONS), recorded by the first `tradebot up`.
STORED_SETTINGS_KEY = "settings:stored"

# The operator's trading state (ACTIVE / REDUCING / HALTED) as JSON, and which worker last saw which
# version of it (a hash: consumer -> version), so `tradebot status` shows who obeys.
TRADING_STATE_KEY = "risk:trading_state"
TRADING_STATE_SEEN_KEY = "risk:trading_state:seen"
