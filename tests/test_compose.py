"""docker compose without Docker: the default-profile services of docker-compose.yml as local
processes, each with the environment compose would give its container, and the pipeline flowing.

How each part of compose is translated (no container engine needed; tests/test_compose_engine.py runs
the real thing where one is):

- ``.env`` is env.example (the file users copy) with the POSTGRES_PASSWORD it asks for, and ``${...}``
  is interpolated from it;
- the compose hostnames (``redis:6379``, ``timescaledb:5432``) map to the test's embedded servers
  (the database to one of its own there, so other tests' data stays);
- the image's ``tradebot`` script is ``python -m tradebot.cli``, the checkout is on PYTHONPATH, and
  each process runs in an empty folder (like the image's WORKDIR: no stray .env is read);
- ``ports: 127.0.0.1:8000:8000`` becomes a free API_PORT: here every process shares one network;
- ``depends_on: migrate: service_completed_successfully``: migrate runs to completion first;
- ``--scale strategy=2 --scale storage=2``: two processes of each.

MOCK_MAX_TICKS and MOCK_TICKS_PER_SECOND bound the run: the only settings the test adds to the
default services (the live-feed profiles also get provider emulators' URLs and keys).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from tests.deployment import (
    ROOT,
    dotenv,
    in_default_profile,
    load_compose,
    local_argv,
    service_environment,
    tradebot_services,
)
from tests.emulators import AlpacaRestEmulator, AlpacaStreamEmulator, PolygonRestEmulator, PolygonStreamEmulator, Send
from tests.emulators import Trade as EmulatedTrade
from tests.helpers import free_port, wait_until
from tradebot.common.config import Settings
from tradebot.common.db import recreate_database
from tradebot.common.models import Tick
from tradebot.common.streams import STRATEGY_ROLE, lease_key, members_key
from tradebot.strategy.service import book_factory

SCALE = {"strategy": 2, "storage": 2}
TICKS = 4000
BOUNDS = {"MOCK_MAX_TICKS": str(TICKS), "MOCK_TICKS_PER_SECOND": "400"}
RUN_ONCE = "migrate"
# Hang bounds: about a dozen Python processes start on two cores shared with other jobs.
TIMEOUT_S = 120.0
pytestmark = pytest.mark.timeout(300)  # a test's own waits, and the stack's start in the first one
DATABASE = "compose_stack"
# .env as a user writes it: env.example plus the password it asks for (the test servers trust any).
DOTENV = {**dotenv(), "POSTGRES_PASSWORD": "set-in-dotenv", "API_TOKEN": "set-in-dotenv-too"}


@dataclass
class Process:
    """One local stand-in for a container: a service's command with the service's environment."""

    service: str
    env: dict[str, str]
    popen: subprocess.Popen
    log_path: Path
    workdir: Path


@dataclass
class Stack:
    """Every started process of the stack, and how to reach what they wrote."""

    processes: list[Process] = field(default_factory=list)
    migrate_exit_code: int | None = None
    servers: dict[str, str] = field(default_factory=dict)
    redis_url: str = ""
    database_url: str = ""
    api_url: str = ""

    def of(self, service: str) -> list[Process]:
        return [p for p in self.processes if p.service == service]

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log_path.read_text()[-2500:]}" for p in self.processes)


def map_hosts(environment: dict[str, str], servers: dict[str, str]) -> dict[str, str]:
    """Each ``service:port[/database]`` in a URL replaced by the local server standing in for it."""
    mapped = {}
    for name, value in environment.items():
        for compose_address, local_address in servers.items():
            value = re.sub(rf"(?<=[@/]){re.escape(compose_address)}(?=[/?]|$)", local_address, value)
        mapped[name] = value
    leftovers = {n: v for n, v in mapped.items() if any(host in v for host in ("@timescaledb", "//redis"))}
    assert leftovers == {}, f"unmapped compose hostnames: {sorted(leftovers)}"
    return mapped


def address(url: str) -> str:
    """host:port of a URL (its credentials stay those of the compose file)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def local_environment(service: dict, servers: dict[str, str]) -> dict[str, str]:
    """What the container would see, pointed at the local servers, plus the run's bounds."""
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    environment = map_hosts(service_environment(service, DOTENV), servers)
    return {**base, **environment, "PYTHONPATH": str(ROOT), **BOUNDS}


def start(stack: Stack, name: str, service: dict, env: dict[str, str], folder: Path) -> Process:
    index = len(stack.of(name)) + 1
    log_path = folder / f"{name}-{index}.log"
    workdir = folder / f"{name}-{index}"
    workdir.mkdir()
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            local_argv(service["command"]),
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    process = Process(name, env, popen, log_path, workdir)
    stack.processes.append(process)
    return process


async def fresh_servers(redis_url: str, database_url: str) -> str:
    """An empty Redis and a new database of the stack's own (other tests' data stays); its URL."""
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    return await recreate_database(database_url, DATABASE)


@pytest.fixture(scope="module")
async def stack(redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """migrate to completion, then every default-profile worker (strategy and storage twice)."""
    database_url = await fresh_servers(redis_url, database_url)
    folder = tmp_path_factory.mktemp("compose")
    servers = {"redis:6379": address(redis_url), "timescaledb:5432/tradebot": f"{address(database_url)}/{DATABASE}"}
    services = {n: s for n, s in tradebot_services(load_compose()).items() if in_default_profile(s)}
    result = Stack(servers=servers, redis_url=redis_url, database_url=database_url)
    try:
        migrate = start(result, RUN_ONCE, services[RUN_ONCE], local_environment(services[RUN_ONCE], servers), folder)
        result.migrate_exit_code = await asyncio.to_thread(migrate.popen.wait, TIMEOUT_S)
        api_port = str(free_port())
        for name, service in services.items():
            if name == RUN_ONCE:
                continue
            env = local_environment(service, servers)
            if name == "api":
                env["API_PORT"] = api_port
                result.api_url = f"http://127.0.0.1:{api_port}"
            for _ in range(SCALE.get(name, 1)):
                start(result, name, service, env, folder)
        yield result
    finally:
        for process in result.processes:
            if process.popen.poll() is None:
                process.popen.kill()
            process.popen.wait(timeout=15)


async def test_the_migrate_service_completes_successfully_before_the_workers_start(stack: Stack) -> None:
    assert stack.migrate_exit_code == 0, stack.logs()


async def healthcheck_passes(process: Process) -> bool:
    checker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tradebot.healthcheck",
        env=process.env,
        cwd=process.workdir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await checker.wait() == 0


async def wait_until_healthy(stack: Stack, processes: list[Process]) -> None:
    """Each process passes the image's HEALTHCHECK (so it is up, with its signal handlers set)."""
    pending = {id(p): p for p in processes}

    async def all_passed() -> bool:
        results = await asyncio.gather(*(healthcheck_passes(p) for p in pending.values()))
        for key, passed in zip(list(pending), results, strict=True):
            if passed:
                del pending[key]
        return not pending

    try:
        await wait_until(all_passed, timeout=TIMEOUT_S, what="every service's healthcheck to pass")
    except AssertionError:
        raise AssertionError(f"unhealthy: {[p.service for p in pending.values()]}\n{stack.logs()}") from None


async def test_every_service_passes_the_image_healthcheck(stack: Stack) -> None:
    # The Dockerfile's HEALTHCHECK, run with each service's environment. Here all processes share
    # one hostname, so a worker's check cannot tell it from its neighbours (test_healthcheck.py
    # covers that); what this shows is that the compose environment is enough for the check.
    await wait_until_healthy(stack, [p for p in stack.processes if p.service != RUN_ONCE])


async def test_two_strategy_workers_share_the_tick_partitions(stack: Stack) -> None:
    client = aioredis.from_url(stack.redis_url, decode_responses=True)
    partitions = int(stack.of("strategy")[0].env["TICK_PARTITIONS"])

    async def shared() -> bool:
        owners = await client.mget([lease_key(STRATEGY_ROLE, p) for p in range(partitions)])
        return await client.zcard(members_key(STRATEGY_ROLE)) == 2 and len(set(owners) - {None}) == 2

    try:
        await wait_until(shared, timeout=TIMEOUT_S, what="both strategy workers to hold partitions")
    finally:
        await client.aclose()


async def count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def all_ticks_stored(stack: Stack) -> bool:
    return await count(stack.database_url, "SELECT count(*) FROM ticks") == TICKS


async def test_every_tick_lands_in_postgres_exactly_once(stack: Stack) -> None:
    await wait_until(lambda: all_ticks_stored(stack), timeout=TIMEOUT_S, what=f"{TICKS} ticks in the ticks table")
    assert await count(stack.database_url, "SELECT count(DISTINCT id) FROM ticks") == TICKS
    feed = stack.of("market_data")[0].popen
    assert await asyncio.to_thread(feed.wait, TIMEOUT_S) == 0  # it stops at MOCK_MAX_TICKS


async def expected_outputs(stack: Stack) -> tuple[set[str], set[str]]:
    """The signal ids and client order ids one strategy yields over the stored ticks, each symbol in
    trade order (a signal the book sends no order for, a SELL while flat, has no order)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch("SELECT id, symbol, ts, price, size, source FROM ticks")
    finally:
        await conn.close()
    ticks = [
        Tick(id=r["id"], symbol=r["symbol"], timestamp=r["ts"], price=r["price"], size=r["size"], source=r["source"])
        for r in rows
    ]
    ticks.sort(key=lambda tick: (tick.symbol, int(tick.id.rsplit(":", 1)[1])))
    env = stack.of("strategy")[0].env
    settings = Settings(
        _env_file=None,
        short_window=env["SHORT_WINDOW"],
        long_window=env["LONG_WINDOW"],
        order_quantity=env["ORDER_QUANTITY"],
    )
    book = book_factory(settings)()
    decided = [output for tick in ticks for output in book.on_tick(tick)]
    return {signal.id for signal, _ in decided}, {order.id for _, order in decided if order is not None}


async def test_two_strategies_give_exactly_the_orders_and_fills_of_one(stack: Stack) -> None:
    await wait_until(lambda: all_ticks_stored(stack), timeout=TIMEOUT_S, what="every tick stored")
    signals, expected = await expected_outputs(stack)
    assert len(expected) > 50  # the bounds give the crossover enough ticks to trade on

    async def stored(sql: str) -> set[str]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return {row[0] for row in await conn.fetch(sql)}
        finally:
            await conn.close()

    async def settled() -> bool:
        return (
            await stored("SELECT id FROM orders") == expected
            and await stored("SELECT client_order_id FROM fills") == expected
            and await stored("SELECT id FROM signals") == signals
        )

    await wait_until(settled, timeout=TIMEOUT_S, what="orders and fills of exactly the expected signals")
    assert await count(stack.database_url, "SELECT count(*) FROM fills") == len(expected)


async def test_the_api_serves_what_storage_wrote(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        listed = (await client.get("/symbols")).json()
        assert sum(symbol["ticks"] for symbol in listed["symbols"]) == TICKS
        stored_ticks = {symbol["symbol"]: symbol["ticks"] for symbol in listed["symbols"]}
        history = await client.get("/history/AAPL", params={"timeframe": "1m"})
    assert history.status_code == 200, history.text
    assert sum(bar["trade_count"] for bar in history.json()["bars"]) == stored_ticks["AAPL"]


def live_feed_emulators(profile: str, emulators: ExitStack) -> dict[str, str]:
    """Provider emulators that stream one AAPL trade; the .env lines that point a feed at them."""
    scenario = [Send([EmulatedTrade("AAPL", 190.25, 300, id=7, exchange="V")])]
    if profile == "alpaca":
        stream = emulators.enter_context(AlpacaStreamEmulator(scenario))
        rest = emulators.enter_context(AlpacaRestEmulator())
        return {
            "ALPACA_KEY": stream.key,
            "ALPACA_SECRET": stream.secret,
            "ALPACA_STREAM_URL": stream.url,
            "ALPACA_DATA_URL": rest.url,
            "ALPACA_TRADING_URL": rest.url,
        }
    polygon = emulators.enter_context(PolygonStreamEmulator(scenario))
    polygon_rest = emulators.enter_context(PolygonRestEmulator())
    return {
        "POLYGON_API_KEY": polygon.api_key,
        "POLYGON_STREAM_HOST": f"ws://{polygon.host_port}",
        "POLYGON_REST_URL": polygon_rest.url,
    }


@pytest.mark.parametrize("profile", ["alpaca", "polygon"])
async def test_a_live_feed_profile_service_feeds_the_running_stack(stack: Stack, profile: str, tmp_path: Path) -> None:
    # `docker compose --profile <provider> up -d`: the provider's service joins the running stack.
    # Local emulators stand in for the provider; their keys stand in for the ones in .env.
    service = load_compose()["services"][profile]
    with ExitStack() as emulators:
        env = {**local_environment(service, stack.servers), **live_feed_emulators(profile, emulators)}
        feed = start(stack, profile, service, env, tmp_path)

        async def stored() -> bool:
            return await count(stack.database_url, f"SELECT count(*) FROM ticks WHERE source = '{profile}'") == 1

        try:
            await wait_until(stored, timeout=TIMEOUT_S, what=f"the {profile} trade stored by the stack")
        except AssertionError:
            raise AssertionError(stack.logs()) from None
        feed.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(feed.popen.wait, 30) == 0, stack.logs()
    stack.processes.remove(feed)  # done; the stop test below is about the default services


async def test_every_service_stops_cleanly_on_sigterm(stack: Stack) -> None:
    running = [p for p in stack.processes if p.service not in {RUN_ONCE, "market_data"}]
    await wait_until_healthy(stack, running)
    assert [p.service for p in running if p.popen.poll() is not None] == [], stack.logs()  # nothing crashed
    for process in running:
        process.popen.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
    codes = [(p.service, await asyncio.to_thread(p.popen.wait, 30)) for p in running]  # stop_grace_period
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit 143 in Docker).
    api_stopped = "Application shutdown complete" in stack.of("api")[0].log_path.read_text()
    graceful = [(name, 0 if (name, code) == ("api", -signal.SIGTERM) and api_stopped else code) for name, code in codes]
    assert graceful == [(p.service, 0) for p in running], stack.logs()
