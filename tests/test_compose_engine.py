"""docker compose up, for real: docker-compose.yml on a real container engine, as a user runs it.

The engine is ``../shared/tools/compose-engine`` (or $COMPOSE_ENGINE): podman behind its
Docker-compatible API, docker-compose 1.29 as the client, local stand-ins for the base images (no
registry is reachable here). The test copies what the image is built from to a folder of its own and
writes a ``.env`` there (env.example, a random password, free host ports; never the checkout's .env),
then, in order:

1. ``up -d --build --scale strategy=2 --scale storage=2``: migrate exits 0, every other container
   turns healthy, ``/history/AAPL`` serves bars and ``/health`` lists every role with its count;
2. ``docker kill`` (SIGKILL) of one strategy container: its partitions move to the live worker,
   ticks keep being stored, and so do signals of the moved partitions' symbols;
3. the ``alpaca`` profile against the Alpaca emulators (tests/emulators) on the host: its trade is
   stored; ``run --rm backfill`` and ``run --rm backfill_polygon`` against the REST emulators exit 0
   and their bars are stored;
4. ``stop``: every tradebot container exits 0; ``down -v`` at the end, also after a failure.

Minutes long, so marked ``compose_engine`` and left out of ``make test``; .ci/run runs it
(``pytest -m compose_engine tests/test_compose_engine.py``). Skipped, with the reason, without the
tool or without root.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import redis

from tests.deployment import ENV_EXAMPLE, ROOT, TRADEBOT_IMAGE
from tests.emulators import AlpacaRestEmulator, AlpacaStreamEmulator, BarDataset, PolygonRestEmulator, Send
from tests.emulators import Trade as EmulatedTrade
from tests.helpers import free_port
from tradebot.common.streams import STRATEGY_ROLE, heartbeat_key, lease_key, partition_for

ENGINE = Path(os.environ.get("COMPOSE_ENGINE", ROOT.parent / "shared" / "tools" / "compose-engine"))
PROJECT = "tradebot"  # docker-compose.yml's `name:`, which the tool passes as -p
SCALE = {"strategy": 2, "storage": 2}
DEFAULT_SERVICES = {"redis": 1, "timescaledb": 1, "market_data": 1, "execution": 1, "api": 1, "alerts": 1, **SCALE}
WORKER_ROLES = {"market_data": 1, "execution": 1, "alerts": 1, **SCALE}  # the API answers /health itself
# The build context: what the Dockerfile COPYs, and the files compose reads.
CONTEXT = [
    "Dockerfile",
    ".dockerignore",
    "docker-compose.yml",
    "pyproject.toml",
    "requirements.txt",
    "manage_symbols.py",
]
START_TIMEOUT_S = 1200  # a cold engine builds its stand-in images first (~6-13 min)
BUILD_TIMEOUT_S = 900
READY_TIMEOUT_S = 240
STEP_TIMEOUT_S = 120
BACKFILL_SYMBOLS = "AAPL,MSFT"
BACKFILL_DAYS = 5

pytestmark = [pytest.mark.compose_engine, pytest.mark.timeout(START_TIMEOUT_S + BUILD_TIMEOUT_S + 600)]

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 1.0) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)  # the pause between polls; each command takes a while anyway


@dataclass
class Stack:
    """The running compose project: its folder, .env, and how to reach it from the host."""

    folder: Path
    env: dict[str, str]
    log: list[str] = field(default_factory=list)
    killed: set[str] = field(default_factory=set)  # containers the test killed on purpose

    def engine(self, *args: str, timeout: float = STEP_TIMEOUT_S, check: bool = True) -> str:
        """The tool with ``args`` in the project folder; its output (stdout and stderr)."""
        started = time.monotonic()
        try:
            result = subprocess.run(
                [str(ENGINE), *args], cwd=self.folder, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(f"compose-engine {' '.join(args)}: no answer in {timeout}s") from error
        output = result.stdout + result.stderr
        self.log.append(
            f"$ compose-engine {' '.join(args)}  # {time.monotonic() - started:.0f}s, exit {result.returncode}"
        )
        if check:
            assert result.returncode == 0, (
                f"compose-engine {' '.join(args)} exited {result.returncode}:\n{output[-4000:]}"
            )
        return output

    def compose(self, *args: str, timeout: float = STEP_TIMEOUT_S, check: bool = True) -> str:
        return self.engine("compose", *args, timeout=timeout, check=check)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['API_PORT']}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.env['REDIS_HOST_PORT']}/0"

    @property
    def database_url(self) -> str:
        password, port = self.env["POSTGRES_PASSWORD"], self.env["POSTGRES_HOST_PORT"]
        return f"postgresql://postgres:{password}@127.0.0.1:{port}/tradebot"

    def containers(self) -> list[dict[str, Any]]:
        """Every container of the project, as ``podman inspect`` describes it."""
        ids = podman("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").split()
        return json.loads(podman("inspect", *ids)) if ids else []

    def logs(self) -> str:
        """The commands run so far and the tail of every container's log, for a failure message."""
        tails = []
        for container in self.containers():
            name = container["Name"].lstrip("/")
            tails.append(f"--- {name} ({container['State']['Status']})\n{container_log(name, tail=30)}")
        return "\n".join(self.log + tails)

    def sql(self, query: str) -> Any:
        """One value from the compose TimescaleDB, through its published host port."""

        async def fetch() -> Any:
            conn = await asyncpg.connect(self.database_url)
            try:
                return await conn.fetchval(query)
            finally:
                await conn.close()

        return asyncio.run(fetch())


def podman(*args: str) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
    return result.stdout


def container_log(name: str, tail: int | None = None) -> str:
    """A container's output, stdout and stderr interleaved (the workers log to stderr)."""
    args = ["podman", "logs", *(["--tail", str(tail)] if tail else []), name]
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60).stdout


def service_of(container: dict[str, Any]) -> str:
    return container["Config"]["Labels"]["com.docker.compose.service"]


def health_of(container: dict[str, Any]) -> str | None:
    health = container["State"].get("Health") or container["State"].get("Healthcheck") or {}
    return health.get("Status")


def skip_reason() -> str | None:
    if not ENGINE.exists():
        return f"no container engine tool at {ENGINE} (set COMPOSE_ENGINE to ../shared/tools/compose-engine)"
    if os.geteuid() != 0:
        return "compose-engine runs a rootful podman: run as root"
    return None


def dotenv_for_test() -> dict[str, str]:
    """What the test sets in .env on top of env.example: a password and free host ports."""
    return {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "API_TOKEN": secrets.token_hex(16),
        "REDIS_HOST_PORT": str(free_port()),
        "POSTGRES_HOST_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "MOCK_TICKS_PER_SECOND": "100",  # two shared cores: enough to trade on, light enough to share
    }


def write_dotenv(path: Path, values: dict[str, str]) -> None:
    """env.example with ``values`` set (replacing its lines of the same name), as a user edits it."""
    lines, left = [], dict(values)
    for line in ENV_EXAMPLE.read_text().splitlines():
        name = line.lstrip("# ").split("=", 1)[0]
        lines.append(f"{name}={left.pop(name)}" if "=" in line and name in left else line)
    path.write_text("\n".join([*lines, *(f"{name}={value}" for name, value in left.items())]) + "\n")
    path.chmod(0o600)


def copy_context(folder: Path) -> None:
    for name in CONTEXT:
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "tradebot", folder / "tradebot", ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack up with strategy and storage x2; ``down -v`` afterwards, whatever happened."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("compose-engine") / PROJECT
    folder.mkdir()
    copy_context(folder)
    running = Stack(folder, dotenv_for_test())
    write_dotenv(folder / ".env", running.env)
    running.engine("start", timeout=START_TIMEOUT_S)
    running.compose("down", "-v", "--remove-orphans", check=False)  # leftovers of an interrupted run
    try:
        scale = [arg for role, count in SCALE.items() for arg in ("--scale", f"{role}={count}")]
        running.compose("up", "-d", "--build", *scale, timeout=BUILD_TIMEOUT_S)
        yield running
    finally:
        profiles = [arg for profile in ("alpaca", "backfill", "backfill_polygon") for arg in ("--profile", profile)]
        running.compose(*profiles, "down", "-v", "--remove-orphans", check=False)
        label = f"label=com.docker.compose.project={PROJECT}"
        left = podman("ps", "-aq", "--filter", label).split() + podman("volume", "ls", "-q", "--filter", label).split()
        assert left == [], f"down -v left containers or volumes behind: {left}"


def all_healthy(stack: Stack) -> bool:
    containers = stack.containers()
    running = Counter(
        service_of(c) for c in containers if c["State"]["Status"] == "running" and health_of(c) == "healthy"
    )
    migrate = [c["State"] for c in containers if service_of(c) == "migrate"]
    assert [s["ExitCode"] for s in migrate if s["Status"] == "exited"] in ([], [0]), stack.logs()
    return dict(running) == DEFAULT_SERVICES and [s["Status"] for s in migrate] == ["exited"]


def test_every_container_turns_healthy_and_migrate_exits_0(stack: Stack) -> None:
    try:
        wait_for(lambda: all_healthy(stack), READY_TIMEOUT_S, "every container healthy, migrate exited 0", every=3)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stack.logs()}") from None


def history_bars(stack: Stack, symbol: str, timeframe: str = "1m") -> list[dict[str, Any]]:
    try:
        response = httpx.get(f"{stack.api}/history/{symbol}", params={"timeframe": timeframe}, timeout=10)
    except httpx.HTTPError:
        return []
    return response.json()["bars"] if response.status_code == 200 else []


def test_the_api_serves_bars_of_the_stored_ticks(stack: Stack) -> None:
    bars = wait_for(lambda: history_bars(stack, "AAPL"), STEP_TIMEOUT_S, "bars in /history/AAPL")
    assert sum(bar["trade_count"] for bar in bars) > 0


def test_health_lists_every_role_with_its_scaled_count(stack: Stack) -> None:
    health = httpx.get(f"{stack.api}/health", timeout=10)
    assert health.status_code == 200, health.text
    body = health.json()
    assert (body["status"], body["database"], body["redis_reachable"]) == (
        "ok",
        {"reachable": True, "mode": "timescaledb", "replica_reachable": None},
        True,
    )
    hosts = {c["Config"]["Hostname"]: service_of(c) for c in stack.containers()}
    assert Counter(worker["role"] for worker in body["workers"]) == WORKER_ROLES
    # Each worker is the container it says it is: its heartbeat names the container's hostname.
    assert {worker["role"]: hosts[worker["host"]] for worker in body["workers"]} == {r: r for r in WORKER_ROLES}


def strategy_leases(client: redis.Redis, partitions: int) -> dict[int, str | None]:
    return dict(enumerate(client.mget([lease_key(STRATEGY_ROLE, p) for p in range(partitions)])))


def started_after(client: redis.Redis, member: str, moment: datetime) -> bool:
    """True if ``member``'s heartbeat comes from a process that started after ``moment``."""
    beat = client.get(heartbeat_key(STRATEGY_ROLE, member))
    return beat is not None and datetime.fromisoformat(json.loads(beat)["started_at"]) > moment


def test_a_killed_strategy_container_hands_its_partitions_over_and_storage_keeps_storing(stack: Stack) -> None:
    partitions = int(stack.env.get("TICK_PARTITIONS", "8"))
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        both = wait_for(
            lambda: (
                len(set(strategy_leases(client, partitions).values()) - {None}) == 2
                and strategy_leases(client, partitions)
            ),
            STEP_TIMEOUT_S,
            "both strategy workers to hold partitions",
        )
        strategies = {
            c["Config"]["Hostname"]: c["Name"].lstrip("/") for c in stack.containers() if service_of(c) == "strategy"
        }
        victim = sorted(set(both.values()))[0]
        survivor = sorted(set(both.values()))[1]
        victim_partitions = sorted(p for p, owner in both.items() if owner == victim)
        ticks_before = stack.sql("SELECT count(*) FROM ticks")
        killed_at = datetime.now(UTC)
        stack.killed.add(strategies[victim.rsplit("-", 1)[0]])
        podman("kill", "--signal", "KILL", *stack.killed)  # what `docker kill` sends

        def moved() -> bool:
            owners = strategy_leases(client, partitions)
            taken = [owners[p] for p in victim_partitions]
            return all(owner == survivor or (owner and started_after(client, owner, killed_at)) for owner in taken)

        wait_for(moved, STEP_TIMEOUT_S, f"partitions {victim_partitions} of the killed worker to move", every=0.5)

        def resumed() -> bool:
            """New ticks stored, and signals of the moved partitions' symbols (their new owner trades)."""
            since = f"WHERE ts > '{killed_at.isoformat()}'"
            symbols = stack.sql(f"SELECT array_agg(DISTINCT symbol) FROM signals {since}") or []
            return stack.sql("SELECT count(*) FROM ticks") > ticks_before and any(
                partition_for(symbol, partitions) in victim_partitions for symbol in symbols
            )

        wait_for(resumed, STEP_TIMEOUT_S, "ticks, and signals of the moved partitions, stored after the kill")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stack.logs()}") from None
    finally:
        client.close()


def bridge_gateway() -> str:
    """The host's address on the project's network: containers reach host servers there."""
    network = json.loads(podman("network", "inspect", f"{PROJECT}_default"))[0]
    return network["subnets"][0]["gateway"]


@pytest.fixture(scope="module")
def provider_emulators(stack: Stack) -> Iterator[dict[str, str]]:
    """Alpaca's stream and REST and Polygon's REST emulators on the host; the .env lines for them."""
    host = bridge_gateway()  # not 0.0.0.0: reachable from the containers and this host only
    now = datetime.now(UTC)
    dataset = BarDataset.generate(BACKFILL_SYMBOLS.split(","), now - timedelta(days=BACKFILL_DAYS), now)
    scenario = [Send([EmulatedTrade("AAPL", 190.25, 300, id=7, exchange="V")])]
    with ExitStack() as emulators:
        stream = emulators.enter_context(AlpacaStreamEmulator(scenario, host=host, max_connections=None))
        rest = emulators.enter_context(AlpacaRestEmulator(dataset, host=host))
        polygon = emulators.enter_context(PolygonRestEmulator(dataset, host=host))
        yield {
            "ALPACA_KEY": stream.key,
            "ALPACA_SECRET": stream.secret,
            "ALPACA_STREAM_URL": stream.url,
            "ALPACA_DATA_URL": rest.url,
            "ALPACA_TRADING_URL": rest.url,
            "POLYGON_API_KEY": polygon.api_key,
            "POLYGON_REST_URL": polygon.url,
        }


def test_the_alpaca_profile_feeds_the_stack_from_the_emulator(stack: Stack, provider_emulators: dict[str, str]) -> None:
    stack.env.update(provider_emulators)
    write_dotenv(stack.folder / ".env", stack.env)  # the keys and URLs a user puts in .env
    stack.compose("--profile", "alpaca", "up", "-d", "--no-deps", "alpaca")
    try:
        wait_for(
            lambda: stack.sql("SELECT count(*) FROM ticks WHERE source = 'alpaca'") == 1,
            STEP_TIMEOUT_S,
            "the emulator's Alpaca trade stored",
        )
        wait_for(
            lambda: any(service_of(c) == "alpaca" and health_of(c) == "healthy" for c in stack.containers()),
            STEP_TIMEOUT_S,
            "the alpaca container healthy",
            every=3,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stack.logs()}") from None


@pytest.mark.parametrize(("service", "source"), [("backfill", "alpaca"), ("backfill_polygon", "polygon")])
def test_compose_run_backfill_exits_0_and_stores_the_emulators_bars(
    stack: Stack, provider_emulators: dict[str, str], service: str, source: str
) -> None:
    stack.env.update(provider_emulators)
    write_dotenv(stack.folder / ".env", stack.env)
    # -e narrows the universe and range to what the emulator serves; the command is the service's.
    output = stack.compose(
        "--profile",
        service,
        "run",
        "--rm",
        "-e",
        "SYMBOL_MODE=custom",
        "-e",
        f"SYMBOLS={BACKFILL_SYMBOLS}",
        "-e",
        f"BACKFILL_DAYS={BACKFILL_DAYS}",
        "-e",
        f"BACKFILL_MINUTE_DAYS={BACKFILL_DAYS}",
        service,
        timeout=STEP_TIMEOUT_S * 2,
    )
    # Any BACKFILL_DAYS-day window holds sessions, so every symbol has daily and intraday bars.
    stored = stack.sql(f"SELECT array_agg(DISTINCT symbol || ' ' || timeframe) FROM bars WHERE source = '{source}'")
    expected = {f"{symbol} {timeframe}" for symbol in BACKFILL_SYMBOLS.split(",") for timeframe in ("1d", "1m")}
    assert expected <= set(stored or []), output[-3000:]
    assert [c for c in stack.containers() if service_of(c) == service] == []  # --rm removed it


def test_compose_stop_stops_every_worker_gracefully(stack: Stack) -> None:
    # SIGTERM, then SIGKILL after stop_grace_period: each worker acks its batch and exits 0 first.
    # (Only the tradebot image's containers: the servers here are stand-ins with their own entrypoints.)
    stack.compose("--profile", "alpaca", "stop", timeout=STEP_TIMEOUT_S * 2)
    codes = {
        c["Name"].lstrip("/"): (service_of(c), c["State"]["ExitCode"])
        for c in stack.containers()
        if c["ImageName"].endswith(TRADEBOT_IMAGE) and c["Name"].lstrip("/") not in stack.killed
    }
    assert {service for service, _ in codes.values()} == {*DEFAULT_SERVICES, "migrate", "alpaca"} - {
        "redis",
        "timescaledb",
    }
    api_stopped = "Application shutdown complete" in container_log(f"{PROJECT}_api_1")
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught: 143 = 128 + 15.
    graceful = {
        name: 0 if (service, code) == ("api", 143) and api_stopped else code for name, (service, code) in codes.items()
    }
    assert graceful == dict.fromkeys(codes, 0), stack.logs()
