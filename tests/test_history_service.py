"""The API process: a port another program holds is a setting to change (exit 78), not a crash loop;
API_WORKERS worker processes share its port and die with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tradebot.api.history_service import port_taken
from tradebot.common.embedded import free_port
from tradebot.common.runtime import CONFIG_ERROR_EXIT


def test_a_taken_api_port_stops_the_api_with_one_line_naming_api_port() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_taken("127.0.0.1", port)
        env = {**os.environ, "API_PORT": str(port), "API_HOST": "127.0.0.1"}
        done = subprocess.run(
            [sys.executable, "-m", "tradebot.api.history_service"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == CONFIG_ERROR_EXIT
    assert done.stderr.strip() == (
        f"127.0.0.1:{port} is in use by another program; set API_PORT to a free port (or stop that program)"
    )
    assert not port_taken("127.0.0.1", port)  # released once its holder closed


def _children(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in listed.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return not state.stdout.strip().startswith("Z")


def test_api_workers_serve_on_one_port_and_die_with_the_api_process(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    """API_WORKERS=2: two uvicorn worker processes answer on API_PORT, and a SIGKILLed API process
    (as `tradebot up` dying takes it) leaves none of them running."""
    port = free_port()
    env = {
        **os.environ,
        "API_PORT": str(port),
        "API_WORKERS": "2",
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    api = subprocess.Popen([sys.executable, "-m", "tradebot.api.history_service"], env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert api.poll() is None, "the API process ended"
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/symbols", timeout=5)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API never answered"
            time.sleep(0.2)
        servers = [pid for pid in _children(api.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(servers) == 2
        os.kill(api.pid, signal.SIGKILL)
        api.wait(timeout=10)
        deadline = time.monotonic() + 60  # each worker stops on SIGTERM (its lifeline): a hang bound
        while any(_alive(pid) for pid in servers):
            assert time.monotonic() < deadline, "an API worker outlived the API process"
            time.sleep(0.1)
    finally:
        if api.poll() is None:
            api.kill()
            api.wait(timeout=10)
