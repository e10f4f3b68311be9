"""`tradebot up`: servers, migrations, every worker as its own process, restarts, clean stop.

Each worker is started as ``python -m <module>`` with the resolved URLs in its environment, so a
process tree here behaves like the containers of docker compose. A worker that crashes (non-zero
exit) is restarted with exponential backoff, reset once it has stayed up for a while; one that
exits 0 finished on purpose (MAX_MESSAGES, MOCK_MAX_TICKS), and one that exits 78 has a wrong
setting: both stay down. Ctrl-C sends SIGTERM to
all, waits for their grace period, and only then stops the servers.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tradebot.common.config import CONFIG_ERROR_EXIT, ReadySettings, Settings, redact_url
from tradebot.common.lifecycle import backoff_delay_s
from tradebot.common.runtime import infrastructure
from tradebot.roles import module_for

log = logging.getLogger("tradebot.supervisor")

RESTART_BACKOFF_BASE_S, RESTART_BACKOFF_CAP_S = 1.0, 30.0  # 1, 2, 4 … 30 s between restarts
STABLE_AFTER_S = 60.0
POLL_S = 0.2


@dataclass
class Managed:
    """One supervised worker process."""

    role: str
    index: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start_at: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    finished: bool = False

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", module_for(self.role)], env=self.env)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


def worker_environment(settings: ReadySettings) -> dict[str, str]:
    """The parent's environment plus the URLs every worker must share."""
    return {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url}


def up(settings: Settings, scale: dict[str, int]) -> int:
    """Run the whole system until Ctrl-C; returns the exit code."""
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with infrastructure(settings) as ready:
        from tradebot.storage.schema import migrate
        from tradebot.storage.timescale import TimescaleOptions

        migrate(ready.database_url, options=TimescaleOptions.from_settings(ready))
        workers = [
            Managed(role, i + 1, env=worker_environment(ready)) for role, count in scale.items() for i in range(count)
        ]
        for worker in workers:
            worker.start()
        print_summary(ready, scale)
        while not stopping:
            supervise(workers)
            time.sleep(POLL_S)
        stop_all(workers, ready.grace_period_s)
    log.info("tradebot stopped")
    return 0


def supervise(workers: list[Managed]) -> None:
    """Restart any worker that exited, after its backoff delay."""
    now = time.monotonic()
    for worker in workers:
        if worker.process is None:
            if now >= worker.next_start_at:
                worker.start()
            continue
        code = worker.process.poll()
        if code is None or worker.finished:
            continue
        if code in (0, CONFIG_ERROR_EXIT):  # finished on purpose, or misconfigured: a restart cannot help
            log.log(
                logging.INFO if code == 0 else logging.ERROR,
                "%s %s",
                worker.name,
                "finished" if code == 0 else "stopped on a configuration error (see its line above)",
            )
            worker.finished = True
            continue
        if now - worker.started_at > STABLE_AFTER_S:
            worker.restarts = 0
        delay = backoff_delay_s(
            worker.restarts + 1, base_s=RESTART_BACKOFF_BASE_S, cap_s=RESTART_BACKOFF_CAP_S, jitter=False
        )
        log.warning("%s exited with code %s; restarting in %.0fs", worker.name, code, delay)
        worker.restarts += 1
        worker.process = None
        worker.next_start_at = now + delay


def stop_all(workers: list[Managed], grace_period_s: float) -> None:
    """SIGTERM every worker, wait out the grace period, SIGKILL what is left."""
    running = [w for w in workers if w.process is not None and w.process.poll() is None]
    log.info("stopping %d workers", len(running))
    for worker in running:
        worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    deadline = time.monotonic() + grace_period_s + 5
    for worker in running:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", worker.name)
            worker.process.kill()  # type: ignore[union-attr]
            worker.process.wait()  # type: ignore[union-attr]


def print_summary(settings: Settings, scale: dict[str, int]) -> None:
    """What runs where, in a few lines a person reads once."""
    api = f"http://{settings.api_host}:{settings.api_port}"
    workers = ", ".join(f"{role}×{count}" for role, count in scale.items())
    lines = [
        "tradebot is up — Ctrl-C stops everything",
        f"  workers:  {workers}",
        f"  history:  {api}/history/AAPL?timeframe=1m   symbols: {api}/symbols",
        f"  health:   {api}/health   API docs: {api}/docs",
        f"  redis:    {redact_url(settings.redis_url)}",
        f"  postgres: {redact_url(settings.database_url)}",
        f"  data:     {settings.data_dir.resolve()}",
    ]
    print("\n".join(lines), flush=True)  # noqa: T201 - the console summary of `tradebot up`, not a log line
