"""Embedded servers: data survives a restart; a port taken by another program is a clear error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.helpers import free_port
from tradebot.common.config import SettingsError
from tradebot.common.embedded import EmbeddedPostgres, EmbeddedRedis


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
