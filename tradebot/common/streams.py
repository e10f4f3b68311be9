"""Every stream, group and key name in one place (like arq's constants)."""

from __future__ import annotations

import zlib

TICKS_PREFIX = "price.ticks"
BARS = "price.bars"
SIGNALS = "signals"
ORDERS_NEW = "orders.new"
ORDER_EVENTS = "orders.events"
DEAD_LETTER_PREFIX = "dlq."

STORAGE_GROUP = "storage"
STRATEGY_ROLE = "strategy"
EXECUTION_ROLE = "execution"

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
    return [*tick_streams(partitions), BARS, SIGNALS, ORDERS_NEW, ORDER_EVENTS]


def dead_letter_stream(stream: str) -> str:
    """Where entries of ``stream`` go after they fail validation or too many deliveries."""
    return f"{DEAD_LETTER_PREFIX}{stream}"


def lease_key(role: str, partition: int) -> str:
    """Who owns a partition of a stateful role (SET NX PX)."""
    return f"lease:{role}:{partition}"


def members_key(role: str) -> str:
    """Live workers of a role: sorted set scored by heartbeat expiry (ms)."""
    return f"members:{role}"


def checkpoint_key(role: str, partition: int) -> str:
    """The state of a partition, written together with the ack of the entries it includes."""
    return f"checkpoint:{role}:{partition}"


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
