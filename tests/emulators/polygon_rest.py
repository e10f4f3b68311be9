"""Emulator of Polygon's (Massive's) REST aggregates endpoint.

`GET /v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}` with `adjusted`,
`sort` (asc/desc), `limit` (default 5000, max 50000) and the opaque `cursor` of `next_url`.
Use `RESTClient(api_key, base=emu.url)`. Protocol facts reproduced (protocols.md §3.3):

* `from`/`to` are `YYYY-MM-DD` (a whole New York day, `to` inclusive) or Unix ms (inclusive).
* Response `{"ticker","queryCount","resultsCount","adjusted","results":[{"v","vw","o","c","h","l",
  "t"(ms, window start),"n"}],"status":"OK"|"DELAYED","request_id","next_url"?}`; `results` is
  absent when there is no data; `next_url` is absolute (its host is this emulator) and only present
  while more pages remain. A page is `min(limit, page_size)` bars.
* Auth: `Authorization: Bearer KEY` (what the client sends) or `?apiKey=KEY`; missing or wrong
  -> 401 `{"status":"ERROR","request_id","error":...}`.
* Only minute/hour/day timespans; others -> 400 `{"status":"ERROR",...}`.

How polygon-api-client 1.16.3 reacts: `list_aggs` follows `next_url` using only its path and query
against `base`. Non-200 raises `polygon.exceptions.BadResponse(body)`, except that urllib3 retries
413/429/499/500/502/503/504 itself (3 retries, backoff 0.1 s, doubling, honours Retry-After): a
short burst of 429s is invisible, a persistent one ends in `urllib3.exceptions.MaxRetryError`.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .events import NEW_YORK, BarDataset, Timeframe
from .http_base import Failure, HttpEmulator

AGGS_PATH = "/v2/aggs/ticker/{ticker}/range/{multiplier:int}/{timespan}/{start}/{end}"
RATE_LIMIT_ERROR = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your "
    "subscription to continue. https://polygon.io/pricing"
)


def _parse_bound(text: str, is_end: bool) -> datetime:
    """A `from`/`to` path segment: Unix ms, or a New York calendar day (whole day for `to`)."""
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    day = datetime.combine(date.fromisoformat(text), time(), tzinfo=NEW_YORK)
    if is_end:
        day = day + timedelta(days=1) - timedelta(milliseconds=1)
    return day.astimezone(UTC)


class PolygonRestEmulator(HttpEmulator):
    """Polygon aggregates REST on 127.0.0.1; `RESTClient(api_key, base=emu.url)`."""

    def __init__(
        self,
        dataset: BarDataset | None = None,
        *,
        api_key: str = "test-key",
        page_size: int = 50_000,
        delayed: bool = False,
        failures: Iterable[Failure] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.dataset = dataset or BarDataset()
        self.api_key, self.page_size, self.delayed = api_key, page_size, delayed
        self._request_ids = itertools.count(1)
        super().__init__(failures=failures, host=host, port=port)

    def routes(self) -> list[Route]:
        return [Route(AGGS_PATH, self._aggs)]

    def _error(self, status: int, message: str, kind: str = "ERROR") -> JSONResponse:
        return JSONResponse({"status": kind, "request_id": self._request_id(), "error": message}, status)

    def _request_id(self) -> str:
        return f"{next(self._request_ids):032x}"

    def authenticate(self, request: Request) -> Response | None:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        key = bearer or request.query_params.get("apiKey")
        if not key:
            return self._error(401, "API Key was not provided", "NOT_AUTHORIZED")
        if key != self.api_key:
            return self._error(401, "Unknown API Key")
        return None

    def failure_body(self, status: int) -> Any:
        message = RATE_LIMIT_ERROR if status == 429 else f"error {status}"
        return {"status": "ERROR", "request_id": self._request_id(), "error": message}

    async def _aggs(self, request: Request) -> Response:
        params = request.path_params
        query = dict(request.query_params)
        if "cursor" in query:  # the cursor carries the original query; next_url has nothing else
            try:
                query = json.loads(base64.urlsafe_b64decode(query["cursor"]))
            except ValueError:
                return self._error(400, "invalid cursor")
        if params["timespan"] not in ("minute", "hour", "day"):
            return self._error(400, f"unsupported timespan {params['timespan']!r} in this emulator")
        try:
            start = _parse_bound(params["start"], is_end=False)
            end = _parse_bound(params["end"], is_end=True)
            limit = int(query.get("limit", 5000))
            offset = int(query.get("offset", 0))
        except ValueError as error:
            return self._error(400, f"Could not parse the request: {error}")
        if not 1 <= limit <= 50_000:
            return self._error(400, "limit must be between 1 and 50000")
        timeframe = Timeframe(params["multiplier"], params["timespan"])
        bars = self.dataset.bars(params["ticker"], timeframe, start, end)
        bars.sort(key=lambda bar: bar.timestamp, reverse=query.get("sort") == "desc")
        page = bars[offset : offset + min(limit, self.page_size)]
        body: dict[str, Any] = {
            "ticker": params["ticker"],
            "queryCount": len(page),
            "resultsCount": len(page),
            "adjusted": query.get("adjusted", "true") != "false",
            "status": "DELAYED" if self.delayed else "OK",
            "request_id": self._request_id(),
        }
        if page:
            body["results"] = [
                {
                    "v": b.volume,
                    "vw": b.effective_vwap,
                    "o": b.open,
                    "c": b.close,
                    "h": b.high,
                    "l": b.low,
                    "t": int(b.timestamp.timestamp() * 1000),
                    "n": b.trade_count,
                }
                for b in page
            ]
            body["count"] = len(page)
        if offset + len(page) < len(bars):
            cursor = base64.urlsafe_b64encode(json.dumps({**query, "offset": offset + len(page)}).encode())
            body["next_url"] = f"{self.url}{request.url.path}?cursor={cursor.decode()}"
        return JSONResponse(body)
