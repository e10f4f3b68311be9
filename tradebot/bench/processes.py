"""Worker processes for the benchmark: ``python -m <role module>``, logged to files, RSS sampled.

Every process the benchmark starts is a real worker, exactly as ``tradebot up`` runs it; a
background thread samples each one's resident set size (psutil) and keeps the peak per role.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from tradebot.common.config import Settings
from tradebot.roles import module_for

log = logging.getLogger(__name__)

RSS_SAMPLE_INTERVAL_S = 0.25
BENCH_SYMBOLS = 100  # the first 100 of the "popular" universe
STOP_TIMEOUT_S = 15.0


def worker_environment(settings: Settings, **overrides: object) -> dict[str, str]:
    """The environment of a bench worker: the parent's, the bench servers and the settings it needs.

    Everything that shapes the pipeline is set explicitly, so a user's ``.env`` cannot change what
    is measured (environment variables take precedence over the file).
    """
    assert settings.redis_url
    assert settings.database_url
    env = dict(
        os.environ,
        REDIS_URL=settings.redis_url,
        REDIS_CLUSTER=str(settings.redis_cluster).lower(),
        REDIS_MIN_REPLICAS=str(settings.redis_min_replicas),
        DATABASE_URL=settings.database_url,
        DATA_DIR=str(settings.data_dir),
        LOG_LEVEL="INFO",
        SYMBOL_MODE="popular",
        MAX_SYMBOLS=str(BENCH_SYMBOLS),
        TICK_PARTITIONS=str(settings.tick_partitions),
        BUS_BATCH_SIZE=str(settings.bus_batch_size),
        BUS_BLOCK_MS=str(settings.bus_block_ms),
        REDIS_MEMORY_BUDGET_MB=str(settings.redis_memory_budget_mb),
        SHORT_WINDOW=str(settings.short_window),
        LONG_WINDOW=str(settings.long_window),
    )
    env.update({name.upper(): str(value) for name, value in overrides.items()})
    return env


class WorkerPool:
    """The benchmark's worker processes and the peak RSS of each role."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.peak_rss: dict[str, int] = {}
        self._lock = threading.Lock()
        self._started = 0

    def start(self, role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start one worker of ``role``; its log goes to ``<log_dir>/<role>-<n>.log``."""
        self._started += 1
        log_path = self.log_dir / f"{role}-{self._started}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", module_for(role)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self.running.append((role, process))
        return process

    def sample(self) -> None:
        """Record the current RSS of every live worker into the per-role peak."""
        with self._lock:
            live = [(role, process.pid) for role, process in self.running if process.poll() is None]
        for role, pid in live:
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue  # it exited between the poll and the sample
            self.peak_rss[role] = max(rss, self.peak_rss.get(role, 0))

    def stop_all(self) -> None:
        """SIGTERM every worker, wait for its clean stop, SIGKILL what outlives the timeout."""
        with self._lock:
            running, self.running = self.running, []
        for _, process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for role, process in running:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in time; killing it", role, process.pid)
                process.kill()
                process.wait()


@contextmanager
def worker_pool(log_dir: Path) -> Iterator[WorkerPool]:
    """A pool whose RSS is sampled in the background and whose workers are always stopped."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):  # the previous run's: file names restart at 1
        old.unlink()
    pool = WorkerPool(log_dir)
    done = threading.Event()

    def sample_until_done() -> None:
        while not done.wait(RSS_SAMPLE_INTERVAL_S):
            pool.sample()

    sampler = threading.Thread(target=sample_until_done, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        yield pool
    finally:
        pool.stop_all()
        done.set()
        sampler.join()
