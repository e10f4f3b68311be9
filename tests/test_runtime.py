"""Process life: SIGTERM drains the batch and exits 0; the grace period is enforced; bad settings stop start-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

from tests.helpers import wait_until
from tests.runtime_worker import STREAM
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Tick
from tradebot.common.runtime import CONFIG_ERROR_EXIT


def start_worker(settings: Settings, **env: str) -> subprocess.Popen:
    environment = {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": settings.database_url or "",
        "BUS_BLOCK_MS": "50",
        "HEARTBEAT_TTL_S": "3",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime_worker"], env=environment, stderr=subprocess.PIPE, text=True
    )


async def publish(bus: Bus, count: int) -> None:
    """``count`` ticks, an entry each (the tests count pending entries)."""
    now = datetime.now(UTC)
    single = Bus(bus.redis, ticks_per_entry=1)
    await single.publish((STREAM, Tick.create("AAPL", 100 + i, 1, now, trade_id=i)) for i in range(count))


async def test_sigterm_finishes_the_batch_acks_and_exits_zero(bus: Bus, settings: Settings) -> None:
    await publish(bus, 20)
    worker = start_worker(settings)
    try:
        await wait_until(lambda: bus.redis.exists("test.in_batch"), what="the worker to be mid-batch")
        beats = [json.loads(await bus.redis.get(key)) async for key in bus.redis.scan_iter("heartbeat:tester:*")]
        assert beats
        assert beats[0]["pid"] == worker.pid
        worker.send_signal(signal.SIGTERM)
        await bus.redis.set("test.gate", 1)
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
    stderr = worker.communicate()[1]
    assert "tester stopped after" in stderr
    assert "handled=20" in stderr
    assert (await bus.health(STREAM, "lifecycle")).pending == 0
    assert [key async for key in bus.redis.scan_iter("heartbeat:tester:*")] == []


async def test_a_batch_that_outlives_the_grace_period_is_left_for_redelivery(bus: Bus, settings: Settings) -> None:
    await publish(bus, 5)
    worker = start_worker(settings, GRACE_PERIOD_S="0.5")
    try:
        await wait_until(lambda: bus.redis.exists("test.in_batch"), what="the worker to be mid-batch")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 1
    finally:
        worker.kill()
        worker.communicate()
    assert (await bus.health(STREAM, "lifecycle")).pending == 5


def test_a_bad_setting_stops_start_up_with_one_line(settings: Settings) -> None:
    worker = start_worker(settings, TICK_PARTITIONS="eight")
    assert worker.wait(timeout=30) != 0
    lines = [line for line in worker.communicate()[1].splitlines() if line.strip()]
    assert lines == [
        "invalid setting TICK_PARTITIONS (got 'eight'): Input should be a valid integer, "
        "unable to parse string as an integer; set TICK_PARTITIONS to a valid value"
    ]


def test_secrets_are_never_echoed_in_setting_errors(settings: Settings) -> None:
    worker = start_worker(settings, ALPACA_KEY="", POLYGON_API_KEY="pk_live_supersecret", POLYGON_FEED="bogus")
    worker.wait(timeout=30)
    stderr = worker.communicate()[1]
    assert "POLYGON_FEED" in stderr
    assert "supersecret" not in stderr


def test_debug_logging_keeps_provider_frames_and_their_keys_out_of_the_log() -> None:
    import logging

    from tradebot.common.runtime import QUIET_LIBRARIES, setup_logging

    setup_logging("DEBUG")
    try:
        assert logging.getLogger("tradebot").isEnabledFor(logging.DEBUG)
        for name in (*QUIET_LIBRARIES, "websockets.client", "alpaca.data.live.websocket"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
    finally:
        logging.getLogger().setLevel(logging.WARNING)
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_an_embedded_server_port_taken_by_another_program_stops_with_one_line(settings: Settings) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        environment = {
            **os.environ,
            "REDIS_URL": "",
            "DATABASE_URL": "",
            "DATA_DIR": str(settings.data_dir),
            "EMBEDDED_REDIS_PORT": str(listener.getsockname()[1]),
        }
        environment = {name: value for name, value in environment.items() if value != ""}
        worker = subprocess.run(
            [sys.executable, "-m", "tests.runtime_worker"], env=environment, capture_output=True, text=True, timeout=60
        )
    assert worker.returncode == CONFIG_ERROR_EXIT
    assert worker.stderr.strip().splitlines()[-1].endswith("set EMBEDDED_REDIS_PORT to a free port (or REDIS_URL)")
