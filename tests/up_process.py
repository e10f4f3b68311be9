"""`tradebot up` as a real process tree under test: its own embedded servers, its log, its descendants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port
from tests.worker_processes import ROOT

SYMBOLS = "AAPL,MSFT,NVDA"


@dataclass
class UpProcess:
    """One `tradebot up` on a data folder of its own, with embedded servers on free ports."""

    data_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    redis_port: int = field(default_factory=free_port)
    postgres_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path = Path("up.log")

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/tradebot"

    def environment(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in ("REDIS_URL", "DATABASE_URL")}
        env.update(
            PYTHONPATH=str(ROOT),
            DATA_DIR=str(self.data_dir),
            EMBEDDED_REDIS_PORT=str(self.redis_port),
            EMBEDDED_POSTGRES_PORT=str(self.postgres_port),
            API_PORT=str(self.api_port),
            SYMBOL_MODE="custom",
            SYMBOLS=SYMBOLS,
            BUS_BLOCK_MS="100",
            LEASE_TTL_MS="2000",
            CLAIM_IDLE_MS="2000",
            HEARTBEAT_TTL_S="3",
            GRACE_PERIOD_S="5",
            LOG_LEVEL="INFO",
        )
        env.update(self.settings)
        return env

    def start(self, *arguments: str, log_name: str = "up.log") -> subprocess.Popen:
        self.log_path = self.data_dir.parent / log_name
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "tradebot.cli", "up", *arguments],
                cwd=ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        if self.process is None:
            self.process = process
        return process

    def log(self, tail_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail_chars:] if self.log_path.exists() else ""

    def is_up(self) -> bool:
        return "tradebot is up" in self.log(10**7)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, IndexError, ValueError):
            return None

    def redis_pid(self) -> int | None:
        assert self.process is not None
        found = [pid for pid in descendants(self.process.pid) if command_name(pid) == "redis-server"]
        return found[0] if found else None

    def stop(self) -> int | None:
        """Ctrl-C, then SIGKILL if it does not stop in time; returns its exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid → (parent pid, state, start time) of every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), fields[0], fields[19])
    return table


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``: pid → its start time (to tell a reused pid apart)."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = table[pid][2]
        todo += children.get(pid, [])
    return found


def still_running(processes: dict[int, str]) -> dict[int, str]:
    """Those of ``processes`` (pid → start time) that still run (a zombie has stopped)."""
    table = process_table()
    return {
        pid: command_name(pid)
        for pid, started in processes.items()
        if pid in table and table[pid][2] == started and table[pid][1] != "Z"
    }


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
