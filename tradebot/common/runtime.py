"""Process life for every worker: settings, servers, signals, heartbeat, start and stop lines.

A worker module only provides ``async def run(settings, *, stop, counters) -> None`` and calls
``main(role, run)``. SIGINT/SIGTERM set ``stop``; the worker finishes its batch (acks included)
within the grace period, then everything closes and one line with the counters is logged.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol

from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, connect
from tradebot.common.config import CONFIG_ERROR_EXIT, ReadySettings, Settings, SettingsError, load_settings
from tradebot.common.embedded import embedded_servers
from tradebot.common.layout import upgrade_key_layout
from tradebot.common.lifecycle import first_of, wait_or_stop
from tradebot.common.streams import heartbeat_key

log = logging.getLogger("tradebot")
CANCEL_ATTEMPTS = 20
CANCEL_WAIT_S = 0.5  # between two cancellations of a worker that outlived its grace period


class WorkerRun(Protocol):
    """The one entry point of a worker module."""

    def __call__(self, settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str]) -> Awaitable[None]: ...


# A hot-path worker's collector (strategy, execution, storage): the young generation collected every this many
# allocations (CPython's default is 700: several collections per batch of ticks, each a pause on the
# path from a tick to its order); the older ones as often as by default, relative to it.
HOT_PATH_GC_THRESHOLDS = (20_000, 10, 10)


def settle_gc() -> None:
    """For a worker on the tick → order path, once it has started: what start-up allocated (modules,
    settings, the restored state) is frozen out of every later collection, and young collections
    come less often. Reference counting frees nearly everything at once; the collector is for cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*HOT_PATH_GC_THRESHOLDS)


def consumer_name() -> str:
    """Host and pid: unique per process, readable in XINFO CONSUMERS and /health."""
    return f"{socket.gethostname()}-{os.getpid()}"


# At DEBUG these log every frame and request, including the provider's auth message with its keys;
# they stay at INFO whatever LOG_LEVEL says, so secrets never reach the log.
QUIET_LIBRARIES = ("websockets", "urllib3", "alpaca", "polygon", "httpx", "httpcore", "asyncio")
# httpx logs every request's URL at INFO, and alert webhooks carry their secret in the URL.
SILENT_LIBRARIES = ("httpx", "httpcore")


def setup_logging(level: str) -> None:
    """One plain line per event on stderr."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when something configured logging before us
    for name in QUIET_LIBRARIES:
        floor = logging.WARNING if name in SILENT_LIBRARIES else logging.INFO
        logging.getLogger(name).setLevel(max(floor, logging.getLevelName(level)))


@contextmanager
def infrastructure(settings: Settings) -> Iterator[ReadySettings]:
    """Settings with URLs filled in, starting embedded servers for whichever URL is unset."""
    if settings.redis_url and settings.database_url:
        yield ReadySettings.resolved(settings, redis_url=settings.redis_url, database_url=settings.database_url)
        return
    with embedded_servers(
        settings.data_dir,
        settings.embedded_redis_port,
        settings.embedded_postgres_port,
        maxmemory=settings.embedded_redis_maxmemory,
    ) as (redis_url, database_url):
        yield ReadySettings.resolved(
            settings, redis_url=settings.redis_url or redis_url, database_url=settings.database_url or database_url
        )


def config_error_exit(error: SettingsError) -> int:
    """Say what to set, as one plain line on stderr (logging may not be set up yet); returns exit code 78."""
    print(error, file=sys.stderr, flush=True)  # noqa: T201 - the one line of a configuration error
    return CONFIG_ERROR_EXIT


@contextmanager
def bootstrap(*, log_level: str | None = None) -> Iterator[Settings]:
    """The start of every entry point: settings, then logging; ``infrastructure`` inside it, if needed.

    A configuration error anywhere in the block (a bad setting, a missing key, a port taken by
    another program) ends the process with its one line and exit code 78.
    """
    try:
        settings = load_settings()
        setup_logging(log_level or settings.log_level)
        yield settings
    except SettingsError as error:
        sys.exit(config_error_exit(error))


def main(role: str, run: WorkerRun) -> None:
    """Run one worker as a process until SIGINT/SIGTERM (or its burst / max-messages end)."""
    with bootstrap() as settings, infrastructure(settings) as ready:
        exit_code = asyncio.run(serve(role, run, ready))
    sys.exit(exit_code)


async def serve(role: str, run: WorkerRun, settings: ReadySettings) -> int:
    """Run the worker with signal handling and a heartbeat; return the process exit code."""
    stop = asyncio.Event()
    counters: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    signalled: list[int] = []

    def on_signal(signum: int) -> None:
        signalled.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    started = time.monotonic()
    try:
        await _check_key_layout(settings)
    except SettingsError as error:
        return config_error_exit(error)
    log.info("%s starting as %s (pid %d)", role, consumer_name(), os.getpid())
    heartbeat = asyncio.create_task(_heartbeat(role, settings, counters, stop))
    worker = asyncio.ensure_future(run(settings, stop=stop, counters=counters))
    exit_code = await _wait_for_worker(worker, stop, settings.grace_period_s)
    if exit_code == 0 and signalled:  # stopped, not finished: a supervisor may want it back
        exit_code = settings.stopped_exit_code
    stop.set()
    await asyncio.gather(heartbeat, return_exceptions=True)
    summary = " ".join(f"{name}={value}" for name, value in sorted(counters.items())) or "idle"
    log.info("%s stopped after %.1fs: %s", role, time.monotonic() - started, summary)
    return exit_code


async def _check_key_layout(settings: ReadySettings) -> None:
    """Refuse to start on streams of the old key layout that still hold work (see common/layout.py)."""
    client = connect(settings.redis_url, cluster=settings.redis_cluster)
    try:
        await upgrade_key_layout(client, settings.tick_partitions)
    except RECOVERABLE_REDIS_ERRORS:
        pass  # Redis is not there yet: the worker's own loop waits for it, and the next start checks
    finally:
        await client.aclose()


async def _wait_for_worker(worker: asyncio.Task[None], stop: asyncio.Event, grace_period_s: float) -> int:
    await first_of(stop, worker)
    if not worker.done():
        log.info("stop requested: finishing the current batch (grace period %.0fs)", grace_period_s)
        done, _ = await asyncio.wait({worker}, timeout=grace_period_s)
        if not done:
            log.warning("grace period over: cancelling (unacked entries will be redelivered)")
            # A cancellation that lands inside a Redis command can come back as a connection error,
            # which a retry loop rides out; cancelling again interrupts its next wait.
            for _ in range(CANCEL_ATTEMPTS):
                worker.cancel()
                done, _ = await asyncio.wait({worker}, timeout=CANCEL_WAIT_S)
                if done:
                    break
            return 1
    if worker.cancelled():
        return 1
    error = worker.exception()
    if isinstance(error, SettingsError):  # found at run time (say, keys rejected): the line a bad setting gets
        return config_error_exit(error)
    if error is not None:
        log.error("worker failed: %s", error, exc_info=error)
        return 1
    return 0


async def _heartbeat(role: str, settings: ReadySettings, counters: Counter[str], stop: asyncio.Event) -> None:
    """A TTL'd key per worker, so /health shows who is alive and what it has done."""
    client = connect(settings.redis_url, cluster=settings.redis_cluster)
    name = consumer_name()
    base = {
        "role": role,
        "consumer": name,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": datetime.now(UTC).isoformat(),
    }
    interval = settings.heartbeat_ttl_s / 3
    try:
        while not stop.is_set():
            beat = {**base, "updated_at": datetime.now(UTC).isoformat(), "counters": dict(counters)}
            try:
                await client.set(heartbeat_key(role, name), json.dumps(beat), ex=settings.heartbeat_ttl_s)
            except RECOVERABLE_REDIS_ERRORS:
                pass  # the worker's own loop reports the outage; the heartbeat just tries again
            await wait_or_stop(stop, interval)
        await asyncio.wait_for(client.delete(heartbeat_key(role, name)), timeout=1)  # never hold up the exit
    except (*RECOVERABLE_REDIS_ERRORS, TimeoutError):
        pass  # the key expires by itself
    finally:
        await client.aclose()
