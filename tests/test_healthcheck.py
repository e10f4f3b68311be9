"""The container HEALTHCHECK: worker heartbeats in real Redis, the API's /health, no secrets shown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import free_port
from tests.worker_processes import ROOT
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.streams import heartbeat_key
from tradebot.healthcheck import check, glob_escape

HOST = socket.gethostname()


@contextmanager
def fake_api(status: int) -> Iterator[int]:
    """An HTTP server answering every GET with ``status``; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass  # keep pytest output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def no_api(settings: Settings) -> Settings:
    """The settings with an API port nobody listens on, so the worker rule applies."""
    return settings.model_copy(update={"api_port": free_port()})


async def test_a_worker_with_a_live_heartbeat_on_this_host_is_healthy(bus: Bus, settings: Settings) -> None:
    await bus.redis.set(heartbeat_key("strategy", f"{HOST}-4242"), "{}", ex=30)
    assert check(no_api(settings), HOST) == (True, f"worker heartbeat found for host {HOST}")


async def test_a_heartbeat_of_another_host_does_not_make_this_one_healthy(bus: Bus, settings: Settings) -> None:
    await bus.redis.set(heartbeat_key("strategy", "another-container-7"), "{}", ex=30)
    healthy, reason = check(no_api(settings), HOST)
    assert not healthy
    assert "no live worker heartbeat" in reason


async def test_an_expired_heartbeat_is_unhealthy(bus: Bus, settings: Settings) -> None:
    await bus.redis.set(heartbeat_key("storage", f"{HOST}-1"), "{}", px=1)
    await bus.redis.delete(heartbeat_key("storage", f"{HOST}-1"))  # what expiry does, without sleeping
    assert check(no_api(settings), HOST)[0] is False


def test_a_hostname_with_glob_characters_matches_only_itself() -> None:
    assert glob_escape("web[1]*") == "web\\[1\\]\\*"


async def test_the_api_is_healthy_when_health_answers_200(bus: Bus, settings: Settings) -> None:
    with fake_api(200) as port:
        healthy, reason = check(settings.model_copy(update={"api_port": port}), HOST)
    assert healthy
    assert "answered /health with 200" in reason


async def test_a_failing_api_is_unhealthy_even_with_a_heartbeat(bus: Bus, settings: Settings) -> None:
    await bus.redis.set(heartbeat_key("api", f"{HOST}-1"), "{}", ex=30)
    with fake_api(503) as port:
        assert check(settings.model_copy(update={"api_port": port}), HOST)[0] is False


def run_healthcheck(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "API_PORT"}}
    return subprocess.run(
        [sys.executable, "-m", "tradebot.healthcheck"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
    )


async def test_the_command_exits_0_for_a_live_worker(bus: Bus, redis_url: str) -> None:
    await bus.redis.set(heartbeat_key("execution", f"{HOST}-99"), "{}", ex=30)
    result = run_healthcheck(REDIS_URL=redis_url, API_PORT=str(free_port()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("healthy:")


def test_the_command_exits_1_without_showing_the_redis_password() -> None:
    result = run_healthcheck(REDIS_URL=f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0", API_PORT=str(free_port()))
    assert result.returncode == 1
    assert "unhealthy: redis unreachable" in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr
