"""Every stream, group and key name in one place (like arq's constants).

Keys of one partition carry the partition as a Redis Cluster hash tag (``{p}``): its tick stream,
lease, checkpoint and checkpoint parts share a slot, so the atomic commit of a partition (ack,
state, fence) runs on one cluster node, and the same names work unchanged on a single Redis.
A dead-letter stream shares its stream's slot too (its record and the ack are one script).
"""

from __future__ import annotations

import zlib
from enum import StrEnum

TICKS_PREFIX = "price.ticks"
SIGNALS_PREFIX = "signals"
ORDERS_NEW_PREFIX = "orders.new"
BARS = "price.bars"
# Execution is partition 0 of its role: what its commit and the operator's control commit write
# lives in slot {0} with its lease and checkpoint.
EXECUTION_TAG = "{0}"
ORDERS_NEW = f"{ORDERS_NEW_PREFIX}:{EXECUTION_TAG}"  # partition 0's orders, and orders from outside a strategy
ORDER_EVENTS = f"orders.events:{EXECUTION_TAG}"
# Trades gap repair fetched from REST: storage only, never strategies (its own slot; storage reads
# slot by slot).
REPAIRED_TICKS = "price.ticks.repaired"
GAPS = "market.gaps"  # gaps a live feed could not publish (storage records them in the database)
CONTROL_EVENTS = f"control.events:{EXECUTION_TAG}"  # every change of trading state, audited (risk/control.py)
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

# The envelope fields of a bus entry: only the bus (common/bus/wire.py) reads or writes them.
SCHEMA_VERSION = "1"  # one event per entry: every event but ticks (and ticks written before version 2)
TICKS_SCHEMA_VERSION = "2"  # several ticks per entry: type TICKS_TYPE, data a JSON array of rows
TICKS_TYPE = "Ticks"


def partition_for(symbol: str, partitions: int) -> int:
    """Stable partition of a symbol: crc32, never Python's per-process ``hash``."""
    return zlib.crc32(symbol.encode()) % partitions


def partition_tag(partition: int) -> str:
    """The hash tag of a partition: every key with it lives in the same cluster slot."""
    return f"{{{partition}}}"


def tick_stream(partition: int) -> str:
    """The stream holding the ticks of one partition."""
    return f"{TICKS_PREFIX}:{partition_tag(partition)}"


def tick_partition(stream: str) -> int:
    """The partition of a tick stream (``price.ticks:{3}`` -> 3)."""
    return int(stream.rsplit(":", 1)[1].strip("{}"))


def tick_streams(partitions: int) -> list[str]:
    """All tick partitions, in order."""
    return [tick_stream(p) for p in range(partitions)]


def tick_stream_for(symbol: str, partitions: int) -> str:
    """The partition stream a symbol's ticks go to."""
    return tick_stream(partition_for(symbol, partitions))


def signal_stream(partition: int) -> str:
    """The signals the strategies of one partition decided (in the partition's slot, so the
    partition's commit publishes them atomically)."""
    return f"{SIGNALS_PREFIX}:{partition_tag(partition)}"


def signal_streams(partitions: int) -> list[str]:
    """All signal partitions, in order."""
    return [signal_stream(p) for p in range(partitions)]


def order_stream(partition: int) -> str:
    """The orders of one partition's strategies, read by execution (partition 0's is ORDERS_NEW)."""
    return f"{ORDERS_NEW_PREFIX}:{partition_tag(partition)}"


def order_streams(partitions: int) -> list[str]:
    """Every stream execution reads, in order."""
    return [order_stream(p) for p in range(partitions)]


def storage_streams(partitions: int) -> list[str]:
    """Everything the storage worker persists."""
    return [
        *tick_streams(partitions),
        BARS,
        REPAIRED_TICKS,
        *signal_streams(partitions),
        *order_streams(partitions),
        ORDER_EVENTS,
        GAPS,
        CONTROL_EVENTS,
        EQUITY_SAMPLES,
    ]


def storage_partition_streams(partition: int) -> list[str]:
    """What storage reads as the lease owner of ``partition``, all in its slot: its ticks, signals
    and orders (and, in partition 0, the order events)."""
    streams = [tick_stream(partition), signal_stream(partition), order_stream(partition)]
    return [*streams, ORDER_EVENTS] if partition == 0 else streams


def storage_group_streams(partitions: int) -> list[str]:
    """What storage reads in its consumer group with XREADGROUP: the streams no partition owns (rare
    events: bars, repaired ticks, gaps, control, equity)."""
    owned = {stream for partition in range(partitions) for stream in storage_partition_streams(partition)}
    return [stream for stream in storage_streams(partitions) if stream not in owned]


def retained_streams(partitions: int) -> dict[str, tuple[str, ...]]:
    """Every stream the system trims by consumer progress, with the groups that must read it.

    An entry is trimmed only once all of these groups are done with it (see Bus.trim_consumed).
    """
    readers: dict[str, tuple[str, ...]] = {stream: (STORAGE_GROUP,) for stream in storage_streams(partitions)}
    for stream in tick_streams(partitions):
        readers[stream] = (STORAGE_GROUP, STRATEGY_ROLE)
    for stream in order_streams(partitions):
        readers[stream] = (STORAGE_GROUP, EXECUTION_ROLE)
    return readers


def readers_of(stream: str, partitions: int) -> tuple[str, ...]:
    """The groups that must read ``stream`` before it may be trimmed (none for unknown streams)."""
    return retained_streams(partitions).get(stream, ())


def hash_slot_tag(key: str) -> str:
    """What Redis Cluster hashes of ``key``: its first non-empty ``{…}``, else the whole key."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else key


def dead_letter_stream(stream: str) -> str:
    """Where entries of ``stream`` go after they fail validation or too many deliveries.

    It hashes like ``stream`` (``dlq.price.ticks:{3}``, ``dlq.{signals}``), so moving an entry there
    and acking it is one script on one cluster node.
    """
    tagged = stream if hash_slot_tag(stream) != stream else f"{{{stream}}}"
    return f"{DEAD_LETTER_PREFIX}{tagged}"


def original_stream(dead_letters: str) -> str:
    """The stream whose entries a dead-letter stream holds (also for the untagged ``dlq.<stream>`` of
    releases before the cluster layout)."""
    stream = dead_letters.removeprefix(DEAD_LETTER_PREFIX)
    if stream.startswith("{") and stream.endswith("}") and stream.count("{") == 1:
        return stream[1:-1]
    return stream


GAP_PATTERN = "gap:*"


def gap_key(source: str, first: str) -> str:
    """A live feed's gap record (JSON: source, symbols, first, last, dropped, repair, repaired)."""
    return f"gap:{source}:{first}"


def lease_key(role: str, partition: int) -> str:
    """Who owns a partition of a stateful role (SET NX PX)."""
    return f"lease:{role}:{partition_tag(partition)}"


def members_key(role: str) -> str:
    """Live workers of a role: sorted set scored by heartbeat expiry (ms)."""
    return f"members:{role}"


def checkpoint_key(role: str, partition: int) -> str:
    """The state of a partition, written together with the ack of the entries it includes."""
    return f"checkpoint:{role}:{partition_tag(partition)}"


def checkpoint_parts_key(role: str, partition: int) -> str:
    """The state of a partition kept in parts (a hash, e.g. one field per symbol): a commit writes
    only the parts its batch changed."""
    return f"checkpoint_parts:{role}:{partition_tag(partition)}"


def hold_key(stream: str) -> str | None:
    """Entries of ``stream`` a group's snapshot still needs (a hash: group -> the id its snapshot is
    as of; retention keeps what comes after it). Only a stream of a partition's slot (its name has
    the tag) has one: the key shares that slot, so the trim script can read both on a cluster."""
    return f"hold:{stream}" if "{" in stream else None


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


def partition_cursor_key(name: str, partition: int) -> str:
    """How far a producer got in one partition, in that partition's slot: committed with the
    partition's share of a batch (on a cluster a batch cannot be one commit across slots)."""
    return f"{PRODUCER_CURSOR_PREFIX}{name}:{partition_tag(partition)}"


def publisher_sequence_key(source: str, slot_of: str | None = None) -> str:
    """A live publisher's batch counter, compare-and-set with each batch so a retry never doubles it;
    on a cluster one per slot a batch writes to, in the slot of the key ``slot_of``."""
    return f"publisher_seq:{source}" if slot_of is None else f"publisher_seq:{source}:{slot_tag(slot_of)}"


def slot_tag(key: str) -> str:
    """A hash tag that puts another key in ``key``'s cluster slot: its own tag, or the whole key."""
    start = key.find("{")
    end = key.find("}", start + 1) if start != -1 else -1
    if start != -1 and end > start + 1:
        return key[start : end + 1]
    return f"{{{key}}}"


def webhook_alert_key(alert_id: str) -> str:
    """Marks an incoming alert as published (kept for days), so a replayed alert is not traded twice."""
    return f"webhook:alert:{EXECUTION_TAG}:{alert_id}"  # in the slot of the streams it publishes to


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
TRADING_STATE_KEY = f"risk:trading_state:{EXECUTION_TAG}"  # guards the control commit: in its slot
TRADING_STATE_SEEN_KEY = "risk:trading_state:seen"


# The layout before Redis Cluster support (no hash tags, one signals and one orders stream): what
# an upgrade checks for (tradebot/common/layout.py).
def legacy_streams(partitions: int) -> list[str]:
    """Streams of the old layout: they must be drained before an upgrade."""
    old_ticks = [f"{TICKS_PREFIX}:{p}" for p in range(partitions)]
    return [*old_ticks, SIGNALS_PREFIX, ORDERS_NEW_PREFIX, "orders.events", "control.events"]


def legacy_state_keys(partitions: int) -> dict[str, str]:
    """State keys of the old layout and their names now: an upgrade carries them over."""
    moved = {f"checkpoint:{STRATEGY_ROLE}:{p}": checkpoint_key(STRATEGY_ROLE, p) for p in range(partitions)}
    moved |= {
        f"checkpoint_parts:{STRATEGY_ROLE}:{p}": checkpoint_parts_key(STRATEGY_ROLE, p) for p in range(partitions)
    }
    moved[f"checkpoint:{EXECUTION_ROLE}:0"] = checkpoint_key(EXECUTION_ROLE, 0)
    moved[f"checkpoint_parts:{EXECUTION_ROLE}:0"] = checkpoint_parts_key(EXECUTION_ROLE, 0)
    moved["risk:trading_state"] = TRADING_STATE_KEY
    return moved
