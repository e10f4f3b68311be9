"""`tradebot up` supervises its servers and workers: restarts, one owner per folder, no orphans."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import wait_until
from tests.up_process import UpProcess, descendants, still_running
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.streams import (
    EXECUTION_ROLE,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    order_streams,
    storage_streams,
    tick_streams,
)
from tradebot.supervisor import Managed, rerun_finished, supervise

pytestmark = pytest.mark.timeout(300)

TICKS = 6000


@pytest.fixture
def up() -> Iterator[UpProcess]:
    """A `tradebot up` in a folder outside pytest's, whose parents other pytest runs close to other users."""
    folder = Path(tempfile.mkdtemp(prefix="tradebot-up-"))
    system = UpProcess(folder / "data")
    yield system
    system.stop()
    shutil.rmtree(folder, ignore_errors=True)


def worker_pids(system: UpProcess, module: str) -> list[int]:
    assert system.process is not None
    return [pid for pid in descendants(system.process.pid) if module.encode() in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def test_a_second_tradebot_up_on_the_same_data_folder_is_refused_with_one_line(up: UpProcess) -> None:
    up.start("--scale", "api=0")
    await wait_until(up.is_up, timeout=120, what=f"tradebot up\n{up.log()}")
    second = up.start("--scale", "api=0", log_name="second.log")
    assert second.wait(timeout=60) == 78
    output = (up.data_dir.parent / "second.log").read_text().strip()
    assert output.count("\n") == 0, output
    assert f"another `tradebot up` (pid {up.process.pid}) is running on the data folder" in output  # type: ignore[union-attr]
    assert up.process is not None
    assert up.process.poll() is None, "the refused second run disturbed the first"


async def test_a_worker_stopped_by_someone_elses_sigterm_is_restarted(up: UpProcess) -> None:
    up.start("--scale", "api=0")
    await wait_until(up.is_up, timeout=120, what=f"tradebot up\n{up.log()}")
    await wait_until(lambda: "storage starting as" in up.log(10**7), what="the storage worker's signal handlers")
    [first] = worker_pids(up, "tradebot.storage")
    os.kill(first, signal.SIGTERM)
    await wait_until(
        lambda: [pid for pid in worker_pids(up, "tradebot.storage") if pid != first],
        timeout=30,
        what=f"storage to be restarted\n{up.log()}",
    )
    assert "storage-1 was stopped by a signal tradebot up did not send" in up.log(10**7)


async def test_a_killed_supervisor_leaves_no_process_behind(up: UpProcess) -> None:
    up.start()  # every default role, the API included
    await wait_until(up.is_up, timeout=120, what=f"tradebot up\n{up.log()}")
    assert up.process is not None
    await wait_until(lambda: len(worker_pids(up, "tradebot.")) >= 5, what="every worker")
    tree = descendants(up.process.pid)
    assert up.redis_pid() in tree
    assert up.postmaster_pid() in tree
    up.process.send_signal(signal.SIGKILL)
    up.process.wait()
    await wait_until(lambda: not still_running(tree), timeout=60, what=f"the orphans to stop: {still_running(tree)}")


async def test_killed_servers_are_restarted_and_the_pipeline_loses_nothing(up: UpProcess) -> None:
    up.settings = {"MOCK_MAX_TICKS": str(TICKS), "MOCK_TICKS_PER_SECOND": "600"}
    up.start("--scale", "api=0")
    await wait_until(up.is_up, timeout=120, what=f"tradebot up\n{up.log()}")
    bus = Bus(connect(up.redis_url))
    db = await asyncpg.create_pool(up.database_url, min_size=0, max_size=2)
    try:
        await wait_until(lambda: _stored_at_least(db, TICKS // 4), timeout=60, what=f"ticks stored\n{up.log()}")
        redis_server = up.redis_pid()
        assert redis_server is not None
        os.kill(redis_server, signal.SIGKILL)  # it may lose its last second of writes: regenerated, not doubled
        await wait_until(lambda: up.redis_pid() not in (None, redis_server), timeout=60, what=f"redis\n{up.log()}")
        await wait_until(lambda: _stored_at_least(db, TICKS // 2), timeout=60, what=f"the feed to go on\n{up.log()}")
        postmaster = up.postmaster_pid()
        assert postmaster is not None
        os.kill(postmaster, signal.SIGKILL)
        await wait_until(
            lambda: up.postmaster_pid() not in (None, postmaster), timeout=60, what=f"postgres\n{up.log()}"
        )
        await wait_until(lambda: _stored_at_least(db, TICKS * 3 // 4), timeout=60, what=f"storage to go on\n{up.log()}")
        await wait_until(lambda: _settled(db, bus), timeout=120, what=f"the pipeline to drain\n{up.log()}")
        assert await db.fetchval("SELECT count(DISTINCT id) FROM ticks") == TICKS
        for table in ("ticks", "signals", "orders", "fills"):
            assert await db.fetchval(f"SELECT count(*) = count(DISTINCT id) FROM {table}"), f"{table} has a double"
        for server in ("redis", "postgres"):
            assert f"embedded {server} died" in up.log(10**7)
            assert f"embedded {server} is back" in up.log(10**7)
    finally:
        await db.close()
        await bus.close()
    assert up.stop() == 0, up.log()


async def _stored_at_least(db: asyncpg.Pool, count: int) -> bool:
    try:
        return await db.fetchval("SELECT count(*) FROM ticks") >= count
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False  # being restarted, or not migrated yet


async def _settled(db: asyncpg.Pool, bus: Bus) -> bool:
    """The feed's ticks all stored; every tick through the strategy, every order executed and stored."""
    if not await _stored_at_least(db, TICKS):
        return False
    if (
        await bus.backlog(tick_streams(8), STRATEGY_ROLE)
        or await bus.backlog(order_streams(8), EXECUTION_ROLE)
        or await bus.backlog(storage_streams(8), STORAGE_GROUP)
    ):
        return False
    signals, orders, fills, symbols = [
        await db.fetchval(f"SELECT count({what}) FROM {table}")
        for table, what in (("signals", "*"), ("orders", "*"), ("fills", "*"), ("signals", "DISTINCT symbol"))
    ]
    # every order fills; a signal has no order only when it is a symbol's first, a SELL (long only)
    return orders > 0 and signals - symbols <= orders == fills <= signals


def test_finished_runs_start_again_after_redis_came_back_and_stopped_ones_stay_stopped() -> None:
    finished, misconfigured = Managed("market_data", 1), Managed("storage", 1)
    finished.process = subprocess.Popen([sys.executable, "-c", "pass"])
    misconfigured.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(78)"])
    for worker in (finished, misconfigured):
        worker.process.wait()  # type: ignore[union-attr]
    supervise([finished, misconfigured])
    assert finished.finished
    assert misconfigured.finished
    rerun_finished([finished, misconfigured])
    assert not finished.finished
    assert finished.process is None  # started again on the next round
    assert misconfigured.finished  # a bad setting stays a bad setting
