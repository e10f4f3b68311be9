"""Alpaca historical bars (alpaca-py ``StockHistoricalDataClient``) into the bars table.

``python -m tradebot.backfill.alpaca_historical`` runs the backfill with the settings (the same as
``tradebot backfill alpaca``). Up to BACKFILL_BATCH_SIZE symbols go into one multi-symbol request;
alpaca-py follows ``next_page_token`` itself. The live Alpaca worker uses the same source to
repair gaps.

alpaca-py retries 429 and 504 itself with a fixed, blocking ``time.sleep(3)`` per attempt that
ignores Alpaca's rate-limit headers; inside our worker threads that stalls every request slot for
seconds at a time. So its retries are switched off (``_retry = 0``, a private attribute: the
constructor does not expose it) and the runner retries instead, with backoff and the headers.

alpaca-py passes no timeout to requests either, so a server that stops answering would hold a
request (and its thread) forever. The client's session (``_session``, private as well) gets an
adapter that supplies the runner's timeouts to every request that sets none.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

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
from tradebot.market_data.provider_convert import ALPACA, CONVERSION_ERRORS, alpaca_rest_bar

log = logging.getLogger(__name__)

TIMEFRAMES: dict[str, TimeFrame] = {
    "1m": TimeFrame(1, TimeFrameUnit.Minute),
    "5m": TimeFrame(5, TimeFrameUnit.Minute),
    "15m": TimeFrame(15, TimeFrameUnit.Minute),
    "1h": TimeFrame(1, TimeFrameUnit.Hour),
    "1d": TimeFrame(1, TimeFrameUnit.Day),
}
# Alpaca's `end` is inclusive; ours is exclusive.
JUST_BEFORE = timedelta(microseconds=1)


def alpaca_credentials(settings: Settings) -> tuple[str, str]:
    """ALPACA_KEY and ALPACA_SECRET, or one line saying to set them."""
    if settings.alpaca_key is None or settings.alpaca_secret is None:
        missing = "ALPACA_KEY" if settings.alpaca_key is None else "ALPACA_SECRET"
        raise SettingsError(
            f"{missing} is not set: set ALPACA_KEY and ALPACA_SECRET to your Alpaca API key id "
            "and secret (app.alpaca.markets)"
        )
    return settings.alpaca_key.get_secret_value(), settings.alpaca_secret.get_secret_value()


class TimeoutAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with a default timeout for requests that pass none (as alpaca-py's do)."""

    def __init__(self, timeout: tuple[float, float]):
        super().__init__()
        self.timeout = timeout

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self.timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def with_timeout(session: requests.Session, timeout_s: float) -> requests.Session:
    """``session`` with every request that sets no timeout given ``rest_timeouts(timeout_s)``."""
    adapter = TimeoutAdapter(rest_timeouts(timeout_s))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def classify(error: APIError) -> Exception:
    """alpaca-py's APIError as retryable (429/5xx), fatal (keys, plan) or a refused request."""
    status = error.status_code or 0
    body = str(error)
    if status == 429 or status >= 500:
        headers = error.response.headers if error.response is not None else {}
        return RetryableError(f"HTTP {status}", retry_after_seconds(headers))
    if status in (401, 403) and "subscription" in body.lower():
        return FatalError(
            f"Alpaca refused this data for your plan (HTTP {status}: {_message(body)}): "
            "set ALPACA_FEED=iex or upgrade your market data subscription"
        )
    if status in (401, 403):
        return FatalError(f"Alpaca rejected ALPACA_KEY/ALPACA_SECRET (HTTP {status}): set valid keys")
    return RuntimeError(f"HTTP {status}: {_message(body)}")


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", body))[:200]
    except (ValueError, AttributeError):
        return body[:200]


class AlpacaBars:
    """Alpaca's historical stock bars as a BarSource."""

    name = ALPACA

    def __init__(self, settings: Settings, *, timeout_s: float | None = None):
        timeout_s = timeout_s or settings.provider_timeout_s
        key, secret = alpaca_credentials(settings)
        self.batch_size = settings.backfill_batch_size
        self.feed = DataFeed(settings.alpaca_feed)
        self.client = StockHistoricalDataClient(key, secret, url_override=settings.alpaca_data_url)
        self.client._retry = 0  # see the module docstring: the runner retries without blocking sleeps
        with_timeout(self.client._session, timeout_s)  # and requests never wait forever

    def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Bars of ``symbols`` with start <= timestamp < end, every page of them."""
        request = StockBarsRequest(
            symbol_or_symbols=list(symbols),
            timeframe=TIMEFRAMES[timeframe],
            start=start,
            end=end - JUST_BEFORE,
            feed=self.feed,
            adjustment=Adjustment.RAW,
        )
        try:
            result = self.client.get_stock_bars(request)
        except APIError as error:
            raise classify(error) from error
        except requests.Timeout as error:
            raise RetryableError(f"no answer in time ({type(error).__name__})") from error
        except requests.RequestException as error:
            raise RetryableError(f"network error: {type(error).__name__}") from error
        return self._convert(result.data, timeframe)  # type: ignore[union-attr]

    def _convert(self, data: dict, timeframe: Timeframe) -> list[Bar]:
        bars, invalid = [], 0
        for series in data.values():
            for bar in series:
                try:
                    bars.append(alpaca_rest_bar(bar, timeframe))
                except CONVERSION_ERRORS:
                    invalid += 1
        if invalid:
            log.warning("alpaca: skipped %d invalid %s bar(s)", invalid, timeframe)
        return bars


def main() -> None:
    """``python -m tradebot.backfill.alpaca_historical``: the Alpaca backfill with the settings."""
    sys.exit(backfill_command(AlpacaBars, BackfillOptions()))


if __name__ == "__main__":
    main()
