"""`tradebot up`: servers, migrations, every worker as its own process, restarts, clean stop.

Each worker is started as ``python -m <module>`` with the resolved URLs in its environment, so a
process tree here behaves like the containers of docker compose. What happens when a child exits:

- a worker that crashes (non-zero exit) is restarted with exponential backoff, reset once it has
  stayed up for a while; one stopped by a signal this supervisor did not send (it exits
  ``STOPPED_EXIT_CODE``) is restarted too; one that exits 0 finished on purpose (a burst,
  MAX_MESSAGES or MOCK_MAX_TICKS run) and one that exits 78 has a wrong setting: both stay down;
- an embedded server that dies is restarted (Redis from its append-only file, PostgreSQL with
  crash recovery), with a log line; after Redis, finished runs start again, because the second of
  writes Redis may have lost can include the end of their work.

Ctrl-C sends SIGTERM to all workers, waits for their grace period, and only then stops the
servers, each on its own, so one that already died never keeps the other running. If the
supervisor itself is killed (even with SIGKILL), every child gets a signal from the kernel and
stops (:mod:`tradebot.common.lifeline`); a lock on the data folder refuses a second `tradebot up`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from tradebot.common.config import CONFIG_ERROR_EXIT, ReadySettings, Settings, SettingsError, redact_url
from tradebot.common.embedded import EmbeddedServers
from tradebot.common.lifecycle import backoff_delay_s
from tradebot.common.lifeline import die_with_parent, exclusive_folder
from tradebot.common.runtime import config_error_exit
from tradebot.maintenance.drift import warn_about_drift
from tradebot.monitor.summary import SummaryLog
from tradebot.roles import module_for

log = logging.getLogger("tradebot.supervisor")

RESTART_BACKOFF_BASE_S, RESTART_BACKOFF_CAP_S = 1.0, 30.0  # 1, 2, 4 … 30 s between restarts
STABLE_AFTER_S = 60.0
POLL_S = 0.2
STOPPED_EXIT_CODE = 128 + signal.SIGTERM  # what a worker exits with when stopped by a signal (shell convention)
NEVER_FINISHED = {"api"}  # roles without a burst mode: any exit is a reason to restart


@dataclass
class Managed:
    """One supervised worker process."""

    role: str
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start_at: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    finished: bool = False

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module_for(self.role)], env=self.env, preexec_fn=die_with_parent(signal.SIGTERM)
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


def worker_environment(settings: ReadySettings) -> dict[str, str]:
    """The parent's environment plus the URLs every worker must share, and how to report a stop."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "STOPPED_EXIT_CODE": str(STOPPED_EXIT_CODE),
    }


def up(settings: Settings, scale: dict[str, int]) -> int:
    """Run the whole system until Ctrl-C; returns the exit code."""
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        with ExitStack() as stack:
            stack.enter_context(exclusive_folder(settings.data_dir))
            servers, ready = start_servers(settings, stack)
            from tradebot.storage.schema import migrate
            from tradebot.storage.timescale import TimescaleOptions

            migrate(ready.database_url, options=TimescaleOptions.from_settings(ready))
            warn_about_drift(ready)
            workers = [
                Managed(role, i + 1, env=worker_environment(ready))
                for role, count in scale.items()
                for i in range(count)
            ]
            stack.callback(stop_all, workers, ready.grace_period_s)  # before the servers stop
            for worker in workers:
                worker.start()
            print_summary(ready, scale)
            activity = SummaryLog(ready)
            if ready.summary_interval_s > 0:
                activity.start()
                stack.callback(activity.stop)  # runs first: the summary stops before the workers
            while not stopping:
                if servers is not None and "redis" in servers.revive():
                    rerun_finished(workers)
                supervise(workers)
                time.sleep(POLL_S)
    except SettingsError as error:  # another `tradebot up` holds the folder, a port is taken, ...
        return config_error_exit(error)
    log.info("tradebot stopped")
    return 0


def start_servers(settings: Settings, stack: ExitStack) -> tuple[EmbeddedServers | None, ReadySettings]:
    """Embedded servers for whichever URL is unset, tied to this process; the settings with both URLs."""
    if settings.redis_url and settings.database_url:
        return None, ReadySettings.resolved(settings, redis_url=settings.redis_url, database_url=settings.database_url)
    servers = EmbeddedServers.in_folder(
        settings.data_dir,
        settings.embedded_redis_port,
        settings.embedded_postgres_port,
        maxmemory=settings.embedded_redis_maxmemory,
        tied=True,
    )
    servers.start()
    stack.callback(servers.stop)
    ready = ReadySettings.resolved(
        settings,
        redis_url=settings.redis_url or servers.redis.url,
        database_url=settings.database_url or servers.postgres.url,
    )
    return servers, ready


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
        if (code == 0 and worker.role not in NEVER_FINISHED) or code == CONFIG_ERROR_EXIT:
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
        reason = "was stopped by a signal tradebot up did not send" if code == STOPPED_EXIT_CODE else "exited"
        log.warning("%s %s (code %s); restarting in %.0fs", worker.name, reason, code, delay)
        worker.restarts += 1
        worker.process = None
        worker.next_start_at = now + delay


def rerun_finished(workers: list[Managed]) -> None:
    """Start finished runs again after Redis came back: it may have lost their last writes.

    A finished feed resumes from the cursor Redis kept and regenerates what was lost (identically),
    or, if nothing was lost, finds its MOCK_MAX_TICKS reached and finishes again at once.
    """
    for worker in workers:
        if worker.finished and worker.process is not None and worker.process.returncode == 0:
            log.info("%s runs again: Redis may have lost the end of its work", worker.name)
            worker.finished, worker.process, worker.next_start_at = False, None, 0.0


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
        f"  dashboard: {api}/",
        f"  history:  {api}/history/AAPL?timeframe=1m   symbols: {api}/symbols",
        f"  health:   {api}/health   API docs: {api}/docs",
        f"  redis:    {redact_url(settings.redis_url)}",
        f"  postgres: {redact_url(settings.database_url)}",
        f"  data:     {settings.data_dir.resolve()}",
    ]
    print("\n".join(lines), flush=True)  # noqa: T201 - the console summary of `tradebot up`, not a log line
