"""Container health for every role: ``python -m tradebot.healthcheck`` exits 0 (healthy) or 1.

One image runs every role, so one HEALTHCHECK has to fit them all:

- If something listens on the API port here, this is the API container, and it is healthy only
  when ``GET /health`` answers 2xx/3xx (a hung or failing server is unhealthy).
- Otherwise it is a worker container, healthy while a process on this host keeps a heartbeat key
  in Redis (``heartbeat:<role>:<host>-<pid>``, renewed by the runtime every HEARTBEAT_TTL_S / 3 on
  the worker's own event loop, so a stuck worker stops renewing it and the key expires).

Each container has its own hostname, so "this host" means "this container". The one output line
never shows a URL: REDIS_URL and DATABASE_URL may carry passwords.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request

import redis

from tradebot.common.config import Settings, SettingsError, load_settings
from tradebot.common.streams import heartbeat_key

TIMEOUT_S = 3.0
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def worker_heartbeat_alive(redis_url: str, hostname: str) -> bool:
    """True if any worker process on ``hostname`` has a live (unexpired) heartbeat key."""
    pattern = heartbeat_key("*", f"{glob_escape(hostname)}-*")
    client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    try:
        return next(iter(client.scan_iter(match=pattern, count=1000)), None) is not None
    finally:
        client.close()


def api_status(host: str, port: int) -> int | None:
    """HTTP status of ``GET /health`` here; None when nothing listens on the port (not the API)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        return 599  # listening but not answering (timeout, reset): an unhealthy API
    except ConnectionRefusedError:
        return None
    except OSError:
        return 599


def check(settings: Settings, hostname: str) -> tuple[bool, str]:
    """(healthy, one-line reason) for the container named ``hostname``."""
    host = "127.0.0.1" if settings.api_host in WILDCARD_HOSTS else settings.api_host
    status = api_status(host, settings.api_port)
    if status is not None:
        return 200 <= status < 400, f"API on port {settings.api_port} answered /health with {status}"
    if not settings.redis_url:
        return False, "REDIS_URL is not set, so no worker heartbeat can be checked"
    try:
        alive = worker_heartbeat_alive(settings.redis_url, hostname)
    except redis.RedisError as error:
        return False, f"redis unreachable ({type(error).__name__})"
    if alive:
        return True, f"worker heartbeat found for host {hostname}"
    return False, f"no live worker heartbeat for host {hostname} and no API on port {settings.api_port}"


def main() -> None:
    """Print one line and exit 0 when healthy, 1 otherwise (what Docker's HEALTHCHECK expects)."""
    try:
        healthy, reason = check(load_settings(), socket.gethostname())
    except SettingsError as error:  # 1, not 78: Docker's HEALTHCHECK defines only 0 and 1
        healthy, reason = False, str(error)
    print(f"{'healthy' if healthy else 'unhealthy'}: {reason}")
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
