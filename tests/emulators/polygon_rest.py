"""Emulator of Polygon's (Massive's) REST aggregates and trades endpoints.

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
* `GET /v3/trades/{ticker}?timestamp[.gte|.gt|.lte|.lt]&limit&sort&order` (what `list_trades` calls;
  timestamps in Unix ns, as the client sends a datetime, or RFC-3339 / a date) returns
  `{"results":[{"conditions","exchange"(int),"id"(str),"participant_timestamp","price",
  "sequence_number","sip_timestamp"(ns),"size","tape"(int)}],"status":"OK","request_id","next_url"?}`
  (limit default 1000, max 50000): the dataset's trades (events.minute_trades), ascending by default.

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

from .events import NEW_YORK, BarDataset, Timeframe, Trade, parse_time
from .http_base import Failure, HttpEmulator

TRADES_PATH = "/v3/trades/{ticker}"
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
        return [Route(AGGS_PATH, self._aggs), Route(TRADES_PATH, self._trades)]

    def _cursor_query(self, request: Request) -> dict[str, Any]:
        """The query of the first page (a ``next_url`` carries it in its cursor); ValueError if bad."""
        query = dict(request.query_params)
        if "cursor" in query:
            query = json.loads(base64.urlsafe_b64decode(query["cursor"]))
        return query

    def _next_url(self, request: Request, query: dict[str, Any], offset: int) -> str:
        cursor = base64.urlsafe_b64encode(json.dumps({**query, "offset": offset}).encode())
        return f"{self.url}{request.url.path}?cursor={cursor.decode()}"

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
        try:
            query = self._cursor_query(request)  # the cursor carries the original query
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
            body["next_url"] = self._next_url(request, query, offset + len(page))
        return JSONResponse(body)

    async def _trades(self, request: Request) -> Response:
        try:
            query = self._cursor_query(request)
            limit = int(query.get("limit", 1000))
            offset = int(query.get("offset", 0))
            bounds = {
                op: _parse_trade_time(query[f"timestamp.{op}"]) for op in TRADE_BOUNDS if f"timestamp.{op}" in query
            }
            if "timestamp" in query:
                bounds["gte"] = bounds["lte"] = _parse_trade_time(query["timestamp"])
        except ValueError as error:
            return self._error(400, f"Could not parse the request: {error}")
        if not 1 <= limit <= 50_000:
            return self._error(400, "limit must be between 1 and 50000")
        trades = [
            trade
            for trade in self.dataset.trades(request.path_params["ticker"])
            if all(TRADE_BOUNDS[op](_nanos(trade.timestamp), bound) for op, bound in bounds.items())
        ]
        trades.sort(key=lambda trade: trade.timestamp, reverse=query.get("order") == "desc")
        page = trades[offset : offset + min(limit, self.page_size)]
        body: dict[str, Any] = {"status": "OK", "request_id": self._request_id()}
        if page:
            body["results"] = [_trade_json(trade) for trade in page]
        if offset + len(page) < len(trades):
            body["next_url"] = self._next_url(request, query, offset + len(page))
        return JSONResponse(body)


TRADE_BOUNDS = {
    "gte": lambda ns, bound: ns >= bound,
    "gt": lambda ns, bound: ns > bound,
    "lte": lambda ns, bound: ns <= bound,
    "lt": lambda ns, bound: ns < bound,
}


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _parse_trade_time(text: str) -> int:
    """A ``timestamp`` filter: Unix nanoseconds, or RFC-3339 / a date, as Unix nanoseconds."""
    return int(text) if text.isdigit() else _nanos(parse_time(text))


def _trade_json(trade: Trade) -> dict[str, Any]:
    nanos = _nanos(trade.timestamp)
    return {
        "conditions": list(trade.conditions or []),
        "exchange": trade.exchange if isinstance(trade.exchange, int) else 4,
        "id": str(trade.id),
        "participant_timestamp": nanos - 1000,
        "price": trade.price,
        "sequence_number": trade.id,
        "sip_timestamp": nanos,
        "size": trade.size,
        "tape": trade.tape if isinstance(trade.tape, int) else 3,
    }
