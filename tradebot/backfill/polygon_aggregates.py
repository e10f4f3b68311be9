"""Polygon aggregates (polygon-api-client ``RESTClient.list_aggs``) into the bars table.

``tradebot backfill polygon`` (or ``python -m tradebot.backfill.polygon_aggregates``). The endpoint
takes one ticker per request; ``list_aggs`` follows ``next_url`` itself. Bars are unadjusted
(``adjusted=false``), like the live feed and Alpaca's raw bars, so the series joins up.

The client's urllib3 pool retries 413/429/5xx three times itself and then raises ``MaxRetryError``,
which keeps neither the status nor the Retry-After header; other errors become ``BadResponse``
with only the body. We give the pool a retry policy that retries nothing and raises
``HTTPStatusError`` (status, headers, body) for every error response, so the runner can retry
429/5xx with backoff and stop at once on a bad key.

The client also takes ``connect_timeout``/``read_timeout`` but never passes them to urllib3
(polygon-api-client 1.16.3 stores them and requests without), so a stalled server would hold a
request forever. Our pool carries the runner's timeouts itself; a timeout is retried like any
network error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import certifi
import urllib3
from polygon import RESTClient
from urllib3.util.retry import Retry

from tradebot.backfill.runner import (
    BackfillOptions,
    FatalError,
    RetryableError,
    backfill_command,
    rest_timeouts,
    retry_after_seconds,
)
from tradebot.common.config import Settings, SettingsError
from tradebot.common.models import Bar, Timeframe
from tradebot.market_data.provider_convert import CONVERSION_ERRORS, POLYGON, polygon_rest_bar

log = logging.getLogger(__name__)

DEFAULT_REST_URL = "https://api.polygon.io"
TIMESPANS: dict[str, tuple[int, str]] = {
    "1m": (1, "minute"),
    "5m": (5, "minute"),
    "15m": (15, "minute"),
    "1h": (1, "hour"),
    "1d": (1, "day"),
}
MAX_LIMIT = 50_000


class HTTPStatusError(Exception):
    """An error response from the REST API, with what is needed to decide on a retry."""

    def __init__(self, status: int, headers: Mapping[str, str], body: str):
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status, self.headers, self.body = status, dict(headers), body


class SurfaceErrors(Retry):
    """A urllib3 retry policy that retries nothing and raises HTTPStatusError for any 4xx/5xx."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("total", 0)
        kwargs.setdefault("status_forcelist", frozenset(range(400, 600)))
        super().__init__(**kwargs)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> SurfaceErrors:
        if response is not None and response.status >= 400:
            body = response.data.decode("utf-8", "replace") if response.data else ""
            raise HTTPStatusError(response.status, response.headers, body)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def polygon_api_key(settings: Settings) -> str:
    """POLYGON_API_KEY, or one line saying to set it."""
    if settings.polygon_api_key is None:
        raise SettingsError("POLYGON_API_KEY is not set: set it to your Polygon.io API key (polygon.io/dashboard)")
    return settings.polygon_api_key.get_secret_value()


def rest_client(settings: Settings, timeout_s: float) -> RESTClient:
    """The official client on POLYGON_REST_URL (or Polygon's), with error responses surfaced and
    timeouts that apply (see the module docstring)."""
    connect_s, read_s = rest_timeouts(timeout_s)
    client = RESTClient(
        polygon_api_key(settings),
        base=(settings.polygon_rest_url or DEFAULT_REST_URL).rstrip("/"),
        retries=0,
        connect_timeout=connect_s,
        read_timeout=read_s,
    )
    client.client = urllib3.PoolManager(
        num_pools=10,
        headers=client.headers,
        ca_certs=certifi.where(),
        cert_reqs="CERT_REQUIRED",
        retries=SurfaceErrors(),
        timeout=client.timeout,
    )
    return client


def classify(error: HTTPStatusError) -> Exception:
    """429/5xx retryable, 401/403 fatal (key or plan), anything else a refused request."""
    if error.status == 429 or error.status >= 500:
        return RetryableError(f"HTTP {error.status}", retry_after_seconds(error.headers))
    if error.status in (401, 403):
        return FatalError(
            f"Polygon rejected POLYGON_API_KEY for this data (HTTP {error.status}: "
            f"{error.body[:120]}): set a valid key, or one whose plan includes it"
        )
    return RuntimeError(str(error))


def network_error(error: Exception) -> RetryableError:
    """A transport failure (urllib3 wraps it in MaxRetryError, naming the cause) as retryable."""
    cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason else error
    if isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError):
        return RetryableError(f"no answer in time ({type(cause).__name__})")
    return RetryableError(f"network error: {type(cause).__name__}")


def unix_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class PolygonBars:
    """Polygon's aggregates as a BarSource (one symbol per request)."""

    name = POLYGON
    batch_size = 1

    def __init__(self, settings: Settings, *, timeout_s: float | None = None):
        timeout_s = timeout_s or settings.provider_timeout_s
        self.client = rest_client(settings, timeout_s)

    def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Bars of the one symbol with start <= timestamp < end, every page of them."""
        (symbol,) = symbols
        multiplier, timespan = TIMESPANS[timeframe]
        try:
            aggs = list(
                self.client.list_aggs(
                    symbol,
                    multiplier,
                    timespan,
                    unix_ms(start),
                    unix_ms(end) - 1,
                    adjusted=False,
                    sort="asc",
                    limit=MAX_LIMIT,
                )
            )
        except HTTPStatusError as error:
            raise classify(error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise network_error(error) from error
        bars, invalid = [], 0
        for agg in aggs:
            try:
                bars.append(polygon_rest_bar(symbol, agg, timeframe))
            except CONVERSION_ERRORS:
                invalid += 1
        if invalid:
            log.warning("polygon: skipped %d invalid %s bar(s) of %s", invalid, timeframe, symbol)
        return [bar for bar in bars if start <= bar.timestamp < end]


def main() -> None:
    """``python -m tradebot.backfill.polygon_aggregates``: the Polygon backfill with the settings."""
    sys.exit(backfill_command(PolygonBars, BackfillOptions()))


if __name__ == "__main__":
    main()
