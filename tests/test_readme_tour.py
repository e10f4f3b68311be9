"""The README's getting-started commands, run as written in a fresh clone, each output checked.

The clone borrows this run's virtualenv as its ``.venv`` (building one per test run would take
minutes; CI's fresh clone has just built it with ``make``), and its Makefile prerequisites are
dated in the past so ``make run`` finds the venv up to date. Only the ports differ from the README:
free ones, so the test never meets a running tradebot. Every wait is on a condition, bounded.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
README_PORT = "8000"
STARTUP_S = 120.0
ACTIVITY_S = 90.0


def tour_commands(readme: str) -> list[str]:
    """The commands of the first ``bash`` block under "## Getting started", comments dropped."""
    section = readme.split("\n## Getting started", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def poll(condition: Callable[[], object], timeout: float, what: str) -> object:
    """The first truthy value of ``condition``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: an interruptible pause between two checks
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        pause.wait(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


class Running:
    """A command in its own process group (as a terminal runs it), its output collected line by line."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]):
        self.process = subprocess.Popen(
            shlex.split(command),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first line (seen so far or coming) that matches ``pattern``."""
        found = [line for line in self.lines if re.search(pattern, line)]
        deadline = time.monotonic() + timeout
        while not found:
            if self.process.poll() is not None and self._new.empty():
                pytest.fail(f"exited ({self.process.returncode}) before {pattern!r}:\n{''.join(self.lines)[-3000:]}")
            try:
                line = self._new.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout:.0f}s:\n{''.join(self.lines)[-3000:]}")
            if re.search(pattern, line):
                found.append(line)
        return found[0]

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C: SIGINT to the whole process group, then the exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        """The output pipe, once the reader has seen its end."""
        self._reader.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this checkout's HEAD with the running virtualenv as its ``.venv``."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("runs inside the project's virtualenv (make test)")
    if shutil.which("curl") is None or shutil.which("git") is None:
        pytest.skip("the README's tour uses curl and a git clone: install curl and git")
    target = tmp_path / "tradebot"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    (target / ".venv").symlink_to(Path(sys.prefix))
    long_ago = time.time() - 10 * 365 * 86400
    for prerequisite in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        os.utime(target / prerequisite, (long_ago, long_ago))
    return target


def run_once(command: str, cwd: Path, env: dict[str, str], answer: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        shlex.split(command), cwd=cwd, env=env, input=answer, capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(420)
def test_the_getting_started_tour_works_as_written(clone: Path) -> None:
    commands = tour_commands((clone / "README.md").read_text())
    assert commands == [
        "make run",
        ".venv/bin/tradebot activity",
        "curl -s 'http://127.0.0.1:8000/fills?limit=3'",
        "curl -s http://127.0.0.1:8000/account",
        ".venv/bin/tradebot reset",
    ], "the README's tour changed: update this test to check the new commands"
    api_port = str(free_port())
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env |= {
        "EMBEDDED_REDIS_PORT": str(free_port()),
        "EMBEDDED_POSTGRES_PORT": str(free_port()),
        "API_PORT": api_port,
        "SUMMARY_INTERVAL_S": "2",
    }
    local = [command.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{api_port}") for command in commands]

    system = Running(local[0], clone, env)
    try:
        system.wait_for("tradebot is up", STARTUP_S)
        banner = system.wait_for(r"^\s+postgres: ", 30)
        assert re.match(r"\s+postgres: postgresql://postgres@127\.0\.0\.1:\d+/tradebot$", banner), banner

        watcher = Running(local[1], clone, env)
        try:
            watcher.wait_for(r"following signals, orders and fills", 60)
            fill = watcher.wait_for(r"\d\d:\d\d:\d\d\.\d{3}  fill    (BUY|SELL) ", ACTIVITY_S)
            assert re.search(r"@ \d+\.\d{1,2}  commission \$\d+\.\d\d  co-", fill), fill
        finally:
            assert watcher.interrupt() == 0, "".join(watcher.lines)[-2000:]

        def fills() -> dict | None:
            done = run_once(local[2], clone, env)
            body = json.loads(done.stdout) if done.returncode == 0 and done.stdout.startswith("{") else {}
            return body if body.get("count") else None

        body = poll(fills, 60, "fills from the API")
        assert isinstance(body, dict)
        assert 1 <= body["count"] <= 3
        assert {"symbol", "status", "side", "price", "commission", "strategy"} <= body["fills"][0].keys()
        account = json.loads(run_once(local[3], clone, env).stdout)
        assert {"cash", "equity", "positions", "closed_positions"} <= account.keys()
        assert all(p["quantity"] != 0 for p in account["positions"])  # open positions only
        assert account["cash"] == round(account["cash"], 2)
        system.wait_for(r"activity: [\d,]+ ticks/s · [\d,]+ signals · [\d,]+ fills", 30)
    finally:
        code = system.interrupt() if system.process.poll() is None else system.process.returncode
        system.kill()
    # make re-raises the Ctrl-C it got once tradebot has stopped (exit by SIGINT), as in a terminal
    assert code in (0, -signal.SIGINT), code
    assert any("tradebot stopped" in line for line in system.lines), "".join(system.lines)[-3000:]

    reset = run_once(local[4], clone, env, answer="y\n")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert re.search(r"fills \([1-9][\d,]* rows\)", reset.stdout), reset.stdout
    assert "reset done" in reset.stdout, reset.stdout
    again = run_once(local[4], clone, env, answer="n\n")
    assert "fills (0 rows)" in again.stdout, again.stdout
    assert "ticks (0 rows)" in again.stdout, again.stdout
