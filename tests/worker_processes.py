"""Real worker processes for tests: started with ``python -m``, killed with SIGKILL, always reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tradebot.common.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def worker_environment(settings: Settings, **overrides: object) -> dict[str, str]:
    """The environment a worker process needs to reach the test servers, plus setting overrides."""
    assert settings.redis_url
    assert settings.database_url
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        REDIS_URL=settings.redis_url,
        REDIS_CLUSTER=str(settings.redis_cluster).lower(),
        DATABASE_URL=settings.database_url,
        DATA_DIR=str(settings.data_dir),
        LOG_LEVEL="INFO",
    )
    env.update({name.upper(): str(value) for name, value in overrides.items()})
    return env


class WorkerProcesses:
    """Starts worker modules as processes and remembers them, so every one is cleaned up."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def start(self, module: str, env: dict[str, str]) -> subprocess.Popen:
        """Run ``python -m module``; its stderr goes to a log file in ``log_dir``."""
        log_path = self.log_dir / f"{module.rsplit('.', 2)[-2]}-{len(self.started)}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,  # a process group of its own, as on another host
            )
        self.started.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL: no handler runs, nothing is flushed or released."""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def logs(self) -> str:
        """Everything the processes wrote, for failure messages."""
        return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        """SIGTERM every live process, then SIGKILL whatever outlives the grace period."""
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def worker_processes(log_dir: Path) -> Iterator[WorkerProcesses]:
    """Worker processes that are always stopped on the way out, whatever the test did."""
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = WorkerProcesses(log_dir)
    try:
        yield workers
    finally:
        workers.stop_all()
