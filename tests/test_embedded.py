"""Embedded servers: data survives a restart; a port taken by another program is a clear error."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.helpers import free_port
from tradebot.common.config import SettingsError
from tradebot.common.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServers


def fill_up(client: redis.Redis) -> None:
    """Write ~10 MB, more than a small maxmemory allows."""
    for n in range(10_000):
        client.set(f"filler:{n}", "x" * 1000)


@contextmanager
def foreign_listener() -> Iterator[int]:
    """Some other program listening on a port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_redis_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    try:
        redis.Redis(port=server.port).xadd("kept", {"a": "1"})
    finally:
        server.stop()
    server.start()
    try:
        assert redis.Redis(port=server.port).xlen("kept") == 1
    finally:
        server.stop()


def test_a_second_start_reuses_the_running_redis_of_the_same_folder(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "redis", free_port())
    first.start()
    try:
        second = EmbeddedRedis(tmp_path / "redis", first.port)
        second.start()
        assert second.process is None  # reused, so it will not stop the first one's server
    finally:
        first.stop()


def test_a_port_taken_by_another_program_names_the_setting_to_change(tmp_path: Path) -> None:
    with foreign_listener() as port:
        with pytest.raises(SettingsError, match="set EMBEDDED_REDIS_PORT to a free port"):
            EmbeddedRedis(tmp_path / "redis", port).start()
        with pytest.raises(SettingsError, match="set EMBEDDED_POSTGRES_PORT to a free port"):
            EmbeddedPostgres(tmp_path / "postgres", port).start()


def test_redis_refuses_writes_past_its_memory_limit_instead_of_evicting(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", free_port(), maxmemory="3mb")
    server.start()
    try:
        client = redis.Redis(port=server.port, decode_responses=True)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(client.config_get("auto-aof-rewrite-min-size")["auto-aof-rewrite-min-size"]) == 64 * 1024**2
        client.set("cursor", "must survive")
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            fill_up(client)
        assert client.get("cursor") == "must survive"
    finally:
        server.stop()


def test_stopping_after_postgres_died_still_stops_redis(tmp_path: Path) -> None:
    servers = EmbeddedServers.in_folder(tmp_path, free_port(), free_port())
    servers.start()
    redis_process, postgres_process = servers.redis.process, servers.postgres.process
    assert redis_process is not None
    assert postgres_process is not None
    postgres_process.send_signal(signal.SIGKILL)
    postgres_process.wait()
    servers.stop()
    assert redis_process.poll() is not None


def test_a_dead_server_is_revived_from_its_data(tmp_path: Path) -> None:
    servers = EmbeddedServers.in_folder(tmp_path, free_port(), free_port())
    servers.start()
    try:
        redis.Redis(port=servers.redis.port).set("kept", "1")
        for process in (servers.redis.process, servers.postgres.process):
            assert process is not None
            process.send_signal(signal.SIGKILL)
            process.wait()
        deadline = time.monotonic() + 60
        while set(servers.revive()) != {"redis", "postgres"} and time.monotonic() < deadline:
            servers.revive()  # PostgreSQL's old backends may need a moment to let go of its memory
        assert redis.Redis(port=servers.redis.port).get("kept") == b"1"  # appendfsync everysec: a kill may lose 1 s
        assert servers.postgres._pg("psql", *servers.postgres._at, "-d", "tradebot", "-tAc", "SELECT 1") == "1"
    finally:
        servers.stop()
