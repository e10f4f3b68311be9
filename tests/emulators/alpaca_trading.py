"""Emulator of Alpaca's Trading API for alpaca-py's TradingClient and TradingStream.

`AlpacaTradingEmulator` runs two servers over one `TradingBook`: REST (`url`, pass it as
`url_override` to TradingClient) and the `trade_updates` WebSocket (`stream_url`, for
TradingStream). Wire facts reproduced (alpaca-py 0.44 `alpaca/trading/{client,stream}.py`):

* REST: POST/GET /v2/orders, GET/DELETE/PATCH /v2/orders/{id}, GET /v2/orders:by_client_order_id,
  GET /v2/assets/{symbol} (`fractionable` false for the book's `not_fractionable` symbols)
  (404 `{"code":40410000}` when unknown), GET /v2/positions, /v2/account, /v2/clock,
  /v2/account/activities/FILL; 422 `{"code":40010001,"message":"client_order_id must be unique"}`.
* Stream: text JSON in, binary JSON frames out. `{"action":"authenticate","data":{"key_id",
  "secret_key"}}` → `{"stream":"authorization","data":{"status":"authorized",...}}`;
  `{"action":"listen","data":{"streams":["trade_updates"]}}` → `{"stream":"listening",...}`; then
  `{"stream":"trade_updates","data":{"event","order","timestamp",("execution_id","price","qty",
  "position_qty")}}`. Events while no client listens are lost, as at Alpaca.

Scripted faults on POST /v2/orders (`fault_next(kind)` or `fault_rate` at random): "drop" (order
accepted, connection closed with no answer), "500" (accepted, then a 500), "slow" (accepted,
answered after `slow_s`, past the client's timeout), "duplicate" (accepted, answered with the
duplicate 422 as if an earlier attempt had landed), "429" (refused, not accepted), "403" (refused
for insufficient buying power: a definitive rejection). On the stream:
`drop_stream_after_fills` drops every connection after that many fill updates (mid-fill).
On DELETE / PATCH /v2/orders/{id} (`fault_next_change(kind)`): "drop", "500", "slow" (the cancel
or replace is applied, the answer lost or late) and "hold" (applied, answered only after
`hold_s`: a client killed meanwhile never learns the outcome); `change_requests` counts them.
Requests beyond `requests_per_minute` are answered 429, like the real budget.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Self

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve

from .alpaca_rest import FAILURE_BODIES, make_asset
from .background import BackgroundLoop
from .http_base import HttpEmulator
from .trading_book import OrderError, TradingBook, Update

FAULTS = ("drop", "500", "slow", "duplicate", "429", "403")
NOT_FOUND = {"code": 40410000, "message": "order not found"}


class TradingRestEmulator(HttpEmulator):
    """The REST half; `book` holds the state, `faults` the scripted POST failures."""

    def __init__(self, book: TradingBook, *, key: str, secret: str, requests_per_minute: int, slow_s: float) -> None:
        self.book, self.key, self.secret = book, key, secret
        self.requests_per_minute, self.slow_s = requests_per_minute, slow_s
        self.faults: deque[str] = deque()
        self.fault_rate, self.rng = 0.0, random.Random(7)
        self.faults_served: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.throttle_s = 1.0  # a 429's X-RateLimit-Reset is this far ahead
        self.asset_requests = 0
        self.change_faults: deque[str] = deque()
        self.change_requests: dict[str, int] = {"DELETE": 0, "PATCH": 0}
        self.hold_s = 60.0
        self._recent: deque[float] = deque()
        super().__init__()
        self.app = _Dropper(self.app)  # type: ignore[assignment]

    def routes(self) -> list[Route]:
        return [
            Route("/v2/orders", self._orders, methods=["GET", "POST", "DELETE"]),
            Route("/v2/orders:by_client_order_id", self._by_client_id),
            Route("/v2/orders/{order_id}", self._order, methods=["GET", "DELETE", "PATCH"]),
            Route("/v2/positions", lambda r: JSONResponse(self.book.position_list())),
            Route("/v2/account", self._account),
            Route("/v2/account/activities/FILL", self._activities),
            Route("/v2/clock", lambda r: JSONResponse(self.book.clock())),
            Route("/v2/assets/{symbol}", self._asset),
        ]

    def authenticate(self, request: Request) -> Response | None:
        if (request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")) != (
            self.key,
            self.secret,
        ):
            return JSONResponse({"code": 40110000, "message": "request is not authorized"}, 401)
        now = time.monotonic()
        with self.changing():
            while self._recent and self._recent[0] < now - 60:
                self._recent.popleft()
            if len(self._recent) >= self.requests_per_minute:
                return JSONResponse(FAILURE_BODIES[429], 429, headers=self.failure_headers(429))
            self._recent.append(now)
        return None

    def failure_body(self, status: int) -> Any:
        return FAILURE_BODIES.get(status, {"code": status * 100000, "message": f"error {status}"})

    def failure_headers(self, status: int) -> dict[str, str]:
        return (
            {"X-RateLimit-Limit": str(self.requests_per_minute), "X-RateLimit-Remaining": "0"} if status == 429 else {}
        )

    def _next_fault(self) -> str | None:
        with self.changing():
            if self.faults:
                fault: str | None = self.faults.popleft()
            else:
                fault = self.rng.choice(FAULTS) if self.rng.random() < self.fault_rate else None
            if fault:
                self.faults_served[fault] += 1
        return fault

    async def _orders(self, request: Request) -> Response:
        if request.method == "GET":
            q = request.query_params
            found = self.book.list_orders(
                q.get("status", "open"), q.get("after"), int(q.get("limit", 50)), q.get("direction", "desc")
            )
            return JSONResponse(found)
        if request.method == "DELETE":
            return JSONResponse([])
        fault = self._next_fault()
        if fault == "429":
            return JSONResponse(FAILURE_BODIES[429], 429, headers=self.failure_headers(429))
        if fault == "403":
            return JSONResponse({"code": 40310000, "message": "insufficient buying power"}, 403)
        try:
            order = self.book.submit(await request.json())
        except OrderError as error:
            return JSONResponse(error.body, error.status)
        if fault == "drop":
            request.scope["tradebot.drop"] = True
            return JSONResponse({})
        if fault == "500":
            return JSONResponse(FAILURE_BODIES[500], 500)
        if fault == "slow":
            await asyncio.sleep(self.slow_s)  # the scripted fault itself: an answer that comes too late
        if fault == "duplicate":
            return JSONResponse({"code": 40010001, "message": "client_order_id must be unique"}, 422)
        return JSONResponse(order)

    async def _by_client_id(self, request: Request) -> Response:
        order = self.book.find_by_client_id(request.query_params.get("client_order_id", ""))
        return JSONResponse(order) if order else JSONResponse(NOT_FOUND, 404)

    async def _order(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        if request.method == "GET":
            order = self.book.find(order_id)
            return JSONResponse(order) if order else JSONResponse(NOT_FOUND, 404)
        with self.changing():
            self.change_requests[request.method] += 1
            fault = self.change_faults.popleft() if self.change_faults else None
        try:
            if request.method == "DELETE":
                self.book.cancel(order_id)
                answer: Response = Response(status_code=204)
            else:
                answer = JSONResponse(self.book.replace(order_id, await request.json()))
        except OrderError as error:
            return JSONResponse(error.body, error.status)
        if fault == "drop":
            request.scope["tradebot.drop"] = True
        elif fault == "500":
            return JSONResponse(FAILURE_BODIES[500], 500)
        elif fault in ("slow", "hold"):
            await asyncio.sleep(self.slow_s if fault == "slow" else self.hold_s)  # the scripted late answer
        return answer

    async def _account(self, request: Request) -> Response:
        cash = f"{self.book.cash:.2f}"
        return JSONResponse(
            {
                "id": "11111111-2222-3333-4444-555555555555",
                "account_number": "PA0EMULATOR",
                "status": "ACTIVE",
                "currency": "USD",
                "cash": cash,
                "buying_power": cash,
                "equity": cash,
                "portfolio_value": cash,
                "pattern_day_trader": False,
                "trading_blocked": False,
                "account_blocked": False,
            }
        )

    async def _asset(self, request: Request) -> Response:
        self.asset_requests += 1
        symbol = request.path_params["symbol"].upper()
        return JSONResponse(make_asset(symbol, fractionable=symbol not in self.book.not_fractionable))

    async def _activities(self, request: Request) -> Response:
        return JSONResponse(self.book.fill_activities(request.query_params.get("after")))


class _Dropper:
    """ASGI wrapper: a request marked `tradebot.drop` gets no answer, its connection is closed."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        async def maybe_swallow(message: dict) -> None:
            if not scope.get("tradebot.drop"):
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                transport = getattr(getattr(receive, "__self__", None), "transport", None)
                if transport is not None:
                    transport.abort()  # uvicorn's h11 cycle: the client sees the connection die

        await self.app(scope, receive, maybe_swallow)


class TradingStreamEmulator:
    """The `trade_updates` WebSocket: authenticate, listen, then every book update as a frame."""

    def __init__(self, book: TradingBook, *, key: str, secret: str) -> None:
        self.book, self.key, self.secret = book, key, secret
        self.drop_after_fills: int | None = None
        self.muted = False  # True: connections stay up but no update is sent (they are lost)
        self.connections = 0
        self.drops = 0
        self._listeners: set[ServerConnection] = set()
        self._sending: set[asyncio.Future[None]] = set()
        self._fills_since_drop = 0
        self._background = BackgroundLoop(type(self).__name__)
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def start(self) -> None:
        self._background.start()
        self._background.call(self._serve())
        self.book.publish = self._publish_threadsafe

    async def _serve(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, close_timeout=1)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.book.publish = lambda update: None
        self._background.call(self._close())
        self._background.stop()

    async def _close(self) -> None:
        for ws in list(self._listeners):
            ws.transport.abort()
        self._server.close()
        await self._server.wait_closed()

    def drop(self) -> None:
        """Abort every connection now (no close frame)."""
        self._background.call(self._drop_all())

    async def _drop_all(self) -> None:
        with self.book.changing():
            self.drops += 1
        for ws in list(self._listeners):
            self._listeners.discard(ws)
            ws.transport.abort()

    async def _handle(self, ws: ServerConnection) -> None:
        with self.book.changing():
            self.connections += 1
        try:
            async for raw in ws:
                message = json.loads(raw)
                data = message.get("data") or {}
                if message.get("action") == "authenticate":
                    ok = (data.get("key_id"), data.get("secret_key")) == (self.key, self.secret)
                    status = "authorized" if ok else "unauthorized"
                    reply = {"stream": "authorization", "data": {"status": status, "action": "authenticate"}}
                    await ws.send(json.dumps(reply).encode())
                    if not ok:
                        await ws.close(1008, "unauthorized")
                elif message.get("action") == "listen":
                    await ws.send(json.dumps({"stream": "listening", "data": {"streams": ["trade_updates"]}}).encode())
                    with self.book.changing():
                        self._listeners.add(ws)
        except Exception:  # noqa: BLE001 - a client that goes away is normal
            pass
        finally:
            self._listeners.discard(ws)

    def _publish_threadsafe(self, update: Update) -> None:
        frame = json.dumps({"stream": "trade_updates", "data": update}).encode()
        self._background.loop.call_soon_threadsafe(self._send_all, frame, update["event"])

    def _send_all(self, frame: bytes, event: str) -> None:
        if self.muted:
            return
        for ws in list(self._listeners):
            self._keep(asyncio.ensure_future(_send_quietly(ws, frame)))
        if event in ("fill", "partial_fill") and self.drop_after_fills:
            self._fills_since_drop += 1
            if self._fills_since_drop >= self.drop_after_fills:
                self._fills_since_drop = 0
                self._keep(asyncio.ensure_future(self._drop_all()))

    def _keep(self, task: asyncio.Future[None]) -> None:
        """Hold a reference until the task is done (the loop keeps only weak ones)."""
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    @property
    def listening(self) -> int:
        return len(self._listeners)


async def _send_quietly(ws: ServerConnection, frame: bytes) -> None:
    try:
        await ws.send(frame)
    except Exception:  # noqa: BLE001 - lost with the connection, as at Alpaca
        pass


class AlpacaTradingEmulator:
    """REST + stream over one book, with a matcher that works open orders every `tick_s`."""

    def __init__(
        self,
        *,
        key: str = "test-key",
        secret: str = "test-secret",
        prices: dict[str, float] | None = None,
        partial_fills: int = 1,
        drift: float = 0.0,
        requests_per_minute: int = 100_000,
        slow_s: float = 2.0,
        tick_s: float = 0.005,
    ) -> None:
        self.book = TradingBook(prices=prices, partial_fills=partial_fills, drift=drift)
        self.rest = TradingRestEmulator(
            self.book, key=key, secret=secret, requests_per_minute=requests_per_minute, slow_s=slow_s
        )
        self.stream = TradingStreamEmulator(self.book, key=key, secret=secret)
        self.tick_s = tick_s
        self.paused = False  # True: no order works (fills wait), e.g. while a test stages faults

    @property
    def url(self) -> str:
        return self.rest.url

    @property
    def stream_url(self) -> str:
        return self.stream.url

    def start(self) -> Self:
        self.rest.start()
        self.stream.start()
        self._matcher = asyncio.run_coroutine_threadsafe(self._match(), self.rest._background.loop)
        return self

    def stop(self) -> None:
        self._matcher.cancel()
        self.stream.stop()
        self.rest.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fault_next(self, *kinds: str) -> None:
        """Script the next POST /v2/orders outcomes, in order (see FAULTS)."""
        with self.rest.changing():
            self.rest.faults.extend(kinds)

    def fault_next_change(self, *kinds: str) -> None:
        """Script the next DELETE / PATCH /v2/orders/{id} outcomes, in order (drop, 500, slow, hold)."""
        with self.rest.changing():
            self.rest.change_faults.extend(kinds)

    async def _match(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)  # the emulated exchange's pace, not a test wait
            if self.paused:
                continue
            for order_id in self.book.working_ids():
                if not self.book.fill_step(order_id):
                    self.book.retire(order_id)
