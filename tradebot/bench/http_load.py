"""A closed-loop HTTP load: C clients each send the next request as soon as the last one returns."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tradebot.bench.report import percentile

UrlMaker = Callable[[int, random.Random], str]


@dataclass(frozen=True)
class LoadResult:
    """Requests/s and latency of one load run."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def quantile_ms(self, fraction: float) -> float | None:
        return percentile(self.latencies_ms, fraction) if len(self.latencies_ms) > 1 else None


async def wait_until_serving(base_url: str, path: str, timeout_s: float) -> None:
    """Poll ``path`` until it answers 200 (the app has migrated and opened its pool)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while True:
            try:
                if (await client.get(path)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base_url}{path} did not answer within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)


async def closed_loop(base_url: str, make_url: UrlMaker, *, duration_s: float, concurrency: int) -> LoadResult:
    """Run ``concurrency`` clients for ``duration_s``; every response must be a 200 to count."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient, number: int) -> None:
        nonlocal errors
        rng = random.Random(number)
        n = number
        while time.monotonic() < deadline:
            began = time.perf_counter()
            response = await client.get(make_url(n, rng))
            if response.status_code == 200:
                latencies.append((time.perf_counter() - began) * 1000)
            else:
                errors += 1
            n += concurrency

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        began = time.monotonic()
        await asyncio.gather(*(client_loop(client, c) for c in range(concurrency)))
        seconds = time.monotonic() - began
    return LoadResult(len(latencies), errors, seconds, latencies)
