"""Emulator of Alpaca's REST APIs: market data bars and the Trading API asset list.

One server plays both `https://data.alpaca.markets` and `https://paper-api.alpaca.markets`, so
pass `url_override=emu.url` to both `StockHistoricalDataClient` and `TradingClient` (they append
`/v2/...` themselves). Protocol facts reproduced (protocols.md §2):

* Auth headers `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY`: missing -> 401
  `{"code":40110000,"message":"request is not authorized"}`; wrong -> 403 `{"message":"forbidden."}`
  (no `code`, so alpaca-py's `APIError.code` raises KeyError there; `.status_code` works).
* `GET /v2/stocks/bars?symbols=A,B&timeframe=1Min|5Min|1Hour|1Day&start&end&limit&page_token&sort`
  returns `{"bars": {"A": [{"t","o","h","l","c","v","n","vw"}...]}, "next_page_token": str|null}`,
  sorted by symbol then time; `limit` (default 1000, max 10000) counts bars across all symbols in a
  page; the page is `min(limit, page_size)` long. `start` defaults to today 00:00 UTC (like the real
  API, a backfill that forgets `start` gets nothing old); `end` defaults to now; both inclusive.
  `bars` is `{}` when empty. Bad parameters -> 400 `{"code":40010001,"message":...}`.
  (alpaca-py only calls the multi-symbol endpoint, so `/v2/stocks/{symbol}/bars` is not served.)
* `GET /v2/stocks/trades?symbols=A,B&start&end&limit&page_token&sort&feed` (what alpaca-py's
  `get_stock_trades` calls) returns `{"trades": {"A": [{"t","x","p","s","c","i","z"}...]},
  "next_page_token"}`: the dataset's trades (events.minute_trades), paged like bars.
* `GET /v2/assets?status&asset_class&exchange&attributes` -> list of Asset objects with every
  field alpaca-py's `Asset` model requires; `GET /v2/assets/{symbol_or_id}` -> one, or 404.
* Injected 429 carries `X-RateLimit-Limit/Remaining/Reset` and `{"code":42910000,...}`. alpaca-py
  retries 429 and 504 three times with a fixed `time.sleep(3)` (private `_retry_wait`), other
  statuses raise `APIError` at once.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .events import Bar, BarDataset, Timeframe, Trade, parse_time, utc_now
from .http_base import Failure, HttpEmulator

EXCHANGES = {"AAPL": "NASDAQ", "MSFT": "NASDAQ", "NVDA": "NASDAQ", "SPY": "ARCA", "IBM": "NYSE"}
FAILURE_BODIES = {
    429: {"code": 42910000, "message": "rate limit exceeded"},
    500: {"code": 50010000, "message": "internal server error occurred"},
    503: {"code": 50310000, "message": "service unavailable"},
    504: {"code": 50410000, "message": "gateway timeout"},
}


def make_asset(symbol: str, **overrides: Any) -> dict[str, Any]:
    """An Asset object as `GET /v2/assets` returns it; the id is stable per symbol."""
    asset = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-asset:{symbol}")),
        "class": "us_equity",
        "exchange": EXCHANGES.get(symbol, "NASDAQ"),
        "symbol": symbol,
        "name": f"{symbol} Inc. Common Stock",
        "status": "active",
        "tradable": True,
        "marginable": True,
        "shortable": True,
        "easy_to_borrow": True,
        "fractionable": True,
        "min_order_size": "1",
        "min_trade_increment": "1",
        "price_increment": "0.01",
        "maintenance_margin_requirement": 30,
        "attributes": [],
    }
    return {**asset, **overrides}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _bar_json(bar: Bar) -> dict[str, Any]:
    return {
        "t": _rfc3339(bar.timestamp),
        "o": bar.open,
        "h": bar.high,
        "l": bar.low,
        "c": bar.close,
        "v": bar.volume,
        "n": bar.trade_count,
        "vw": bar.effective_vwap,
    }


def _trade_json(trade: Trade) -> dict[str, Any]:
    return {
        "t": _rfc3339(trade.timestamp),
        "x": trade.exchange or "V",
        "p": trade.price,
        "s": trade.size,
        "c": list(trade.conditions or ["@"]),
        "i": trade.id,
        "z": trade.tape or "C",
    }


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"code": 40010001, "message": message}, 400)


class AlpacaRestEmulator(HttpEmulator):
    """Alpaca data + trading REST on 127.0.0.1; `url_override=emu.url` for alpaca-py clients."""

    def __init__(
        self,
        dataset: BarDataset | None = None,
        *,
        assets: Iterable[Mapping[str, Any]] | None = None,
        key: str = "test-key",
        secret: str = "test-secret",
        page_size: int = 10_000,
        failures: Iterable[Failure] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.dataset = dataset or BarDataset()
        symbols = self.dataset.symbols or ["AAPL", "MSFT"]
        self.assets = [dict(a) for a in assets] if assets is not None else [make_asset(s) for s in symbols]
        self.key, self.secret, self.page_size = key, secret, page_size
        super().__init__(failures=failures, host=host, port=port)

    def routes(self) -> list[Route]:
        return [
            Route("/v2/stocks/bars", self._bars),
            Route("/v2/stocks/trades", self._trades),
            Route("/v2/assets", self._assets),
            Route("/v2/assets/{symbol_or_id}", self._asset),
        ]

    def authenticate(self, request: Request) -> Response | None:
        key, secret = (
            request.headers.get("APCA-API-KEY-ID"),
            request.headers.get("APCA-API-SECRET-KEY"),
        )
        if not key or not secret:
            return JSONResponse({"code": 40110000, "message": "request is not authorized"}, 401)
        if (key, secret) != (self.key, self.secret):
            return JSONResponse({"message": "forbidden."}, 403)
        return None

    def failure_body(self, status: int) -> Any:
        return FAILURE_BODIES.get(status, {"code": status * 100000, "message": f"error {status}"})

    def failure_headers(self, status: int) -> dict[str, str]:
        if status != 429:
            return {}
        return {
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + 60),
        }

    # ----- endpoints ----------------------------------------------------------------------------

    async def _bars(self, request: Request) -> Response:
        try:
            timeframe = Timeframe.parse_alpaca(request.query_params.get("timeframe", ""))
        except ValueError as error:
            return _bad_request(f"invalid query parameter: {error}")
        return self._page(
            request, "bars", lambda s, start, end: [_bar_json(b) for b in self.dataset.bars(s, timeframe, start, end)]
        )

    async def _trades(self, request: Request) -> Response:
        return self._page(
            request, "trades", lambda s, start, end: [_trade_json(t) for t in self.dataset.trades(s, start, end)]
        )

    def _page(
        self, request: Request, kind: str, rows_of: Callable[[str, datetime, datetime], list[dict[str, Any]]]
    ) -> Response:
        """One page of ``kind`` (bars or trades) of the symbols asked for, sorted by symbol then time."""
        query = request.query_params
        symbols = [s for s in query.get("symbols", "").split(",") if s]
        if not symbols:
            return _bad_request("missing symbols")
        try:
            today = datetime.combine(utc_now().date(), datetime.min.time(), tzinfo=UTC)
            start = parse_time(query["start"]) if "start" in query else today
            end = parse_time(query["end"]) if "end" in query else utc_now()
            limit = int(query.get("limit", 1000))
            offset = int(base64.urlsafe_b64decode(query["page_token"])) if query.get("page_token") else 0
        except (ValueError, TypeError) as error:
            return _bad_request(f"invalid query parameter: {error}")
        if not 1 <= limit <= 10_000:
            return _bad_request("invalid limit: must be between 1 and 10000")
        descending = query.get("sort") == "desc"
        rows = [
            (symbol, row)
            for symbol in sorted(set(symbols))
            for row in sorted(rows_of(symbol, start, end), key=lambda row: parse_time(row["t"]), reverse=descending)
        ]
        page = rows[offset : offset + min(limit, self.page_size)]
        data: dict[str, list[dict[str, Any]]] = {}
        for symbol, row in page:
            data.setdefault(symbol, []).append(row)
        more = offset + len(page) < len(rows)
        token = base64.urlsafe_b64encode(str(offset + len(page)).encode()).decode() if more else None
        return JSONResponse({kind: data, "next_page_token": token})

    async def _assets(self, request: Request) -> Response:
        query = request.query_params
        wanted_attributes = {a for a in query.get("attributes", "").split(",") if a}

        def matches(asset: Mapping[str, Any]) -> bool:
            return (
                query.get("status") in (None, asset["status"])
                and query.get("asset_class", "us_equity") == asset["class"]
                and query.get("exchange") in (None, asset["exchange"])
                and (not wanted_attributes or bool(wanted_attributes & set(asset.get("attributes") or [])))
            )

        return JSONResponse([asset for asset in self.assets if matches(asset)])

    async def _asset(self, request: Request) -> Response:
        wanted = request.path_params["symbol_or_id"]
        for asset in self.assets:
            if wanted in (asset["symbol"], asset["id"]):
                return JSONResponse(asset)
        return JSONResponse({"code": 40410000, "message": "asset not found"}, 404)
