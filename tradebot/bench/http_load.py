"""A closed-loop HTTP load: C clients each send the next request as soon as the last one returns."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tradebot.bench.report import percentile

UrlMaker = Callable[[int, random.Random], str]


@dataclass(frozen=True)
class LoadResult:
    """Requests/s and latency of one load run, and what the client itself cost."""

    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    client_cpu_s: float = 0.0  # CPU time of this (the client's) process during the run
    header_values: Counter[str] = field(default_factory=Counter)  # of the header asked for, per 200

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def client_cpu_share(self) -> float:
        """The client's CPU time as a share of the run's wall time (1.0: one core all the time)."""
        return self.client_cpu_s / self.seconds

    def quantile_ms(self, fraction: float) -> float | None:
        return percentile(self.latencies_ms, fraction) if len(self.latencies_ms) > 1 else None

    def share_of(self, header_value: str) -> float:
        """The share of the 200 responses whose counted header had ``header_value``."""
        return self.header_values[header_value] / max(1, self.requests)


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


async def closed_loop(
    base_url: str, make_url: UrlMaker, *, duration_s: float, concurrency: int, count_header: str | None = None
) -> LoadResult:
    """Run ``concurrency`` clients for ``duration_s``; every response must be a 200 to count.
    With ``count_header``, the values of that response header are counted too."""
    latencies: list[float] = []
    values: Counter[str] = Counter()
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
                if count_header is not None:
                    values[response.headers.get(count_header, "absent")] += 1
            else:
                errors += 1
            n += concurrency

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        began, cpu_began = time.monotonic(), time.process_time()
        await asyncio.gather(*(client_loop(client, c) for c in range(concurrency)))
        seconds, cpu = time.monotonic() - began, time.process_time() - cpu_began
    return LoadResult(len(latencies), errors, seconds, latencies, cpu, values)
