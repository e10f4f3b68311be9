"""Process life for every worker: settings, servers, signals, heartbeat, start and stop lines.

A worker module only provides ``async def run(settings, *, stop, counters) -> None`` and calls
``main(role, run)``. SIGINT/SIGTERM set ``stop``; the worker finishes its batch (acks included)
within the grace period, then everything closes and one line with the counters is logged.
"""

from __future__ import annotations

import asyncio
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

from tradebot.common import bus as bus_module
from tradebot.common.config import Settings, SettingsError, load_settings
from tradebot.common.embedded import embedded_servers
from tradebot.common.streams import heartbeat_key

log = logging.getLogger("tradebot")

# EX_CONFIG from sysexits.h: a setting is wrong, so restarting the worker cannot help.
CONFIG_ERROR_EXIT = 78


class WorkerRun(Protocol):
    """The one entry point of a worker module."""

    def __call__(self, settings: Settings, *, stop: asyncio.Event, counters: Counter) -> Awaitable[None]: ...


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
def infrastructure(settings: Settings) -> Iterator[Settings]:
    """Settings with URLs filled in, starting embedded servers for whichever URL is unset."""
    if settings.redis_url and settings.database_url:
        yield settings
        return
    with embedded_servers(settings.data_dir, settings.embedded_redis_port, settings.embedded_postgres_port) as (
        redis_url,
        database_url,
    ):
        yield settings.model_copy(
            update={"redis_url": settings.redis_url or redis_url, "database_url": settings.database_url or database_url}
        )


def main(role: str, run: WorkerRun) -> None:
    """Run one worker as a process until SIGINT/SIGTERM (or its burst / max-messages end)."""
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT)
    setup_logging(settings.log_level)
    try:
        with infrastructure(settings) as ready:
            exit_code = asyncio.run(serve(role, run, ready))
    except SettingsError as error:  # e.g. the embedded server's port is taken by another program
        print(error, file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT)
    sys.exit(exit_code)


async def serve(role: str, run: WorkerRun, settings: Settings) -> int:
    """Run the worker with signal handling and a heartbeat; return the process exit code."""
    stop = asyncio.Event()
    counters: Counter = Counter()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    log.info("%s starting as %s (pid %d)", role, consumer_name(), os.getpid())
    heartbeat = asyncio.create_task(_heartbeat(role, settings, counters, stop))
    worker = asyncio.create_task(_run_guarded(run, settings, stop, counters))
    exit_code = await _wait_for_worker(worker, stop, settings.grace_period_s)
    stop.set()
    await asyncio.gather(heartbeat, return_exceptions=True)
    summary = " ".join(f"{name}={value}" for name, value in sorted(counters.items())) or "idle"
    log.info("%s stopped after %.1fs: %s", role, time.monotonic() - started, summary)
    return exit_code


async def _wait_for_worker(worker: asyncio.Task, stop: asyncio.Event, grace_period_s: float) -> int:
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not worker.done():
        log.info("stop requested: finishing the current batch (grace period %.0fs)", grace_period_s)
        done, _ = await asyncio.wait({worker}, timeout=grace_period_s)
        if not done:
            log.warning("grace period over: cancelling (unacked entries will be redelivered)")
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            return 1
    if worker.cancelled():
        return 1
    error = worker.exception()
    if error is not None:
        log.error("worker failed: %s", error, exc_info=error)
        return 1
    if worker.result() is not None:
        print(worker.result(), file=sys.stderr, flush=True)  # the same plain line as a bad setting at start
        return CONFIG_ERROR_EXIT
    return 0


async def _run_guarded(run: WorkerRun, settings: Settings, stop: asyncio.Event, counters: Counter) -> str | None:
    """Run the worker; a configuration error found at run time (say, keys rejected) comes back as its line.

    SettingsError is a SystemExit, which asyncio would not keep in the task but raise through the loop.
    """
    try:
        await run(settings, stop=stop, counters=counters)
    except SettingsError as error:
        return str(error)
    return None


async def _heartbeat(role: str, settings: Settings, counters: Counter, stop: asyncio.Event) -> None:
    """A TTL'd key per worker, so /health shows who is alive and what it has done."""
    assert settings.redis_url
    client = bus_module.connect(settings.redis_url)
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
            except bus_module.RECOVERABLE_REDIS_ERRORS:
                pass  # the worker's own loop reports the outage; the heartbeat just tries again
            await wait_or_stop(stop, interval)
        await asyncio.wait_for(client.delete(heartbeat_key(role, name)), timeout=1)  # never hold up the exit
    except (*bus_module.RECOVERABLE_REDIS_ERRORS, TimeoutError):
        pass  # the key expires by itself
    finally:
        await client.aclose()


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True if ``stop`` was set meanwhile (a sleep that stop cuts short)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return False
