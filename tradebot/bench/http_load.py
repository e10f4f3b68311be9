"""A closed-loop HTTP load: C clients each send the next request as soon as the last one returns."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools
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


# GET path -> (status, the counted header's value or None)
Getter = Callable[[str], Awaitable[tuple[int, str | None]]]
CLIENTS = ("raw", "httpx")


class RawConnection:
    """One keep-alive HTTP/1.1 connection on plain asyncio streams, its responses parsed by httptools
    (uvicorn's parser): a small part of the client CPU httpx spends per request, so a load of these
    measures the server rather than the client. Bench use only: GET, no redirects, no TLS."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, header: str | None):
        self._reader, self._writer = reader, writer
        self._request_tail = f" HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        self._header = header.lower().encode() if header else None
        self._value: str | None = None
        self._complete = False

    @classmethod
    async def open(cls, base_url: str, header: str | None) -> RawConnection:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"the raw client needs http://host:port, not {base_url!r}")
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc, header)

    async def get(self, path: str) -> tuple[int, str | None]:
        """GET ``path``: its status and the counted header's value."""
        self._writer.write(b"GET " + path.encode() + self._request_tail)
        self._value, self._complete = None, False
        parser = httptools.HttpResponseParser(self)
        while not self._complete:
            data = await self._reader.read(1 << 18)
            if not data:
                raise ConnectionError("the server closed the connection mid-response")
            parser.feed_data(data)
        return parser.get_status_code(), self._value

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == self._header:
            self._value = value.decode()

    def on_message_complete(self) -> None:
        self._complete = True


@asynccontextmanager
async def getters(base_url: str, client: str, count: int, header: str | None) -> AsyncIterator[list[Getter]]:
    """``count`` ways to GET a path, each used by one client of the loop: ``raw`` ones own a
    connection each; ``httpx`` ones share one AsyncClient with ``count`` connections."""
    if client == "raw":
        connections = [await RawConnection.open(base_url, header) for _ in range(count)]
        try:
            yield [connection.get for connection in connections]
        finally:
            for connection in connections:
                await connection.close()
        return
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as shared:

        async def get(path: str) -> tuple[int, str | None]:
            response = await shared.get(path)
            return response.status_code, response.headers.get(header) if header else None

        yield [get] * count


async def closed_loop(
    base_url: str,
    make_url: UrlMaker,
    *,
    duration_s: float,
    concurrency: int,
    count_header: str | None = None,
    client: str = "raw",
) -> LoadResult:
    """Run ``concurrency`` clients for ``duration_s``; every response must be a 200 to count.
    With ``count_header``, the values of that response header are counted too; ``client`` is one
    of CLIENTS."""
    latencies: list[float] = []
    values: Counter[str] = Counter()
    errors = 0
    deadline = time.monotonic() + duration_s

    async def client_loop(get: Getter, number: int) -> None:
        nonlocal errors
        rng = random.Random(number)
        n = number
        while time.monotonic() < deadline:
            began = time.perf_counter()
            status, value = await get(make_url(n, rng))
            if status == 200:
                latencies.append((time.perf_counter() - began) * 1000)
                if count_header is not None:
                    values[value or "absent"] += 1
            else:
                errors += 1
            n += concurrency

    async with getters(base_url, client, concurrency, count_header) as gets:
        began, cpu_began = time.monotonic(), time.process_time()
        await asyncio.gather(*(client_loop(get, c) for c, get in enumerate(gets)))
        seconds, cpu = time.monotonic() - began, time.process_time() - cpu_began
    return LoadResult(len(latencies), errors, seconds, latencies, cpu, values)
