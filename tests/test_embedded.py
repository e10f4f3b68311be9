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

from tradebot.common import ports
from tradebot.common.config import SettingsError
from tradebot.common.embedded import ANY_PORT, EmbeddedPostgres, EmbeddedRedis, EmbeddedServers


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


@contextmanager
def foreign_binding() -> Iterator[int]:
    """Some other program holding a port it has bound but does not listen on (another probe for a free port)."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def taken_first(monkeypatch: pytest.MonkeyPatch, *taken: int) -> None:
    """The race: the free ports found are ``taken`` by the time the server binds them, then free ones."""
    offered, free = iter(taken), ports.free_port
    monkeypatch.setattr(ports, "free_port", lambda: next(offered, None) or free())


def test_redis_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", ANY_PORT)
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
    first = EmbeddedRedis(tmp_path / "redis", ANY_PORT)
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


def test_a_port_bound_by_another_program_before_the_server_names_the_setting_too(tmp_path: Path) -> None:
    with foreign_binding() as port:
        with pytest.raises(SettingsError, match="set EMBEDDED_REDIS_PORT to a free port"):
            EmbeddedRedis(tmp_path / "redis", port).start()
        with pytest.raises(SettingsError, match="set EMBEDDED_POSTGRES_PORT to a free port"):
            EmbeddedPostgres(tmp_path / "postgres", port).start()


def test_a_server_on_any_port_tries_another_when_its_free_port_is_taken_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with foreign_listener() as listened, foreign_binding() as bound:
        taken_first(monkeypatch, listened, bound)
        server = EmbeddedRedis(tmp_path / "redis", ANY_PORT)
        server.start()
        try:
            assert server.port not in (ANY_PORT, listened, bound)
            assert redis.Redis(port=server.port).ping()
            server.stop()
            server.start()  # a restart keeps its port: clients hold its URL
            assert redis.Redis(port=server.port).ping()
        finally:
            server.stop()
        taken_first(monkeypatch, listened, bound)
        postgres = EmbeddedPostgres(tmp_path / "postgres", ANY_PORT)
        postgres.start()
        try:
            assert postgres.port not in (ANY_PORT, listened, bound)
            assert postgres.started_here
        finally:
            postgres.stop()


def test_a_server_on_any_port_gives_up_after_a_bounded_number_of_taken_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with foreign_listener() as port:
        monkeypatch.setattr(ports, "free_port", lambda: port)
        with pytest.raises(RuntimeError, match=f"took each of {ports.PORT_TRIES} first"):
            EmbeddedRedis(tmp_path / "redis", ANY_PORT).start()


def test_redis_refuses_writes_past_its_memory_limit_instead_of_evicting(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", ANY_PORT, maxmemory="3mb")
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
    servers = EmbeddedServers.in_folder(tmp_path, ANY_PORT, ANY_PORT)
    servers.start()
    redis_process, postgres_process = servers.redis.process, servers.postgres.process
    assert redis_process is not None
    assert postgres_process is not None
    postgres_process.send_signal(signal.SIGKILL)
    postgres_process.wait()
    servers.stop()
    assert redis_process.poll() is not None


def test_a_dead_server_is_revived_from_its_data(tmp_path: Path) -> None:
    servers = EmbeddedServers.in_folder(tmp_path, ANY_PORT, ANY_PORT)
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
