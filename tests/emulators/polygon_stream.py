"""Emulator of Polygon's (now Massive's) stocks WebSocket (`wss://socket.polygon.io/stocks`).

Protocol facts reproduced (see /work/shared/reference/protocols.md §3.1-3.2):

* Path `/stocks` (the client builds `ws://{feed}/{market}`, so pass `feed=emu.host_port`,
  `secure=False`); other paths get HTTP 404. All frames are JSON text arrays.
* `[{"ev":"status","status":"connected","message":"Connected Successfully"}]` on connect;
  `{"action":"auth","params":KEY}` gets `auth_success`, or `auth_failed` for a wrong key
  (then a 1008 close). Subscribing before auth gets a status `error`.
* `{"action":"subscribe","params":"T.AAPL,AM.AAPL"}` (also `unsubscribe`, wildcard `T.*`) gets
  one `{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}` frame per topic.
* Trades `{"ev":"T","sym","x"(int),"i"(str),"z"(int tape),"p","s","c"(int[]),"t"(ms),"q"}`;
  minute aggregates `{"ev":"AM","sym","v","av","op","vw","o","c","h","l","a","z","s"(ms),"e"(ms)}`
  (`A` for per-second). `av`/`op` are today's accumulated volume and first open among the
  bars this emulator has sent. Only subscribed topics (or `EV.*`) are sent.
* Optional `max_connections`: extra connections get status `max_connections` and a 1008 close.

How polygon-api-client 1.16.3 `WebSocketClient` reacts (checked by tests/test_emulators.py):

* `auth_failed` -> `connect()` raises `polygon.exceptions.AuthError("authentication failed")`.
* `Close(1000)` -> `connect()` returns normally, no reconnect. `Drop()` or another close code
  -> it reconnects (up to `max_reconnects`, then re-raises the ConnectionClosedError).
* Status frames never reach the handler. A frame that is not JSON, or an element without
  `ev`, raises out of `connect()` (JSONDecodeError / KeyError) - the client does not guard it.
* It does not wait for the subscribe acknowledgement.

Scenario steps supported: Send (bar_channel `AM`/`A`), SendMessages, SendRaw, SendError
(status `error`), Drop, Close, RejectAuth (406 -> `max_connections`, else `auth_failed`), Gate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from .events import NEW_YORK, Bar, Trade
from .ws_base import Message, Session, Undecodable, WebSocketEmulator

MAX_CONNECTIONS_MESSAGE = (
    "Maximum number of websocket connections exceeded. You have reached the connection limit for your account."
)


def _status(status: str, message: str) -> list[Message]:
    return [{"ev": "status", "status": status, "message": message}]


def _millis(moment: Any) -> int:
    return int(moment.timestamp() * 1000)


class PolygonStreamEmulator(WebSocketEmulator):
    """Polygon stocks stream on 127.0.0.1; use `WebSocketClient(feed=emu.host_port, secure=False)`."""

    default_channel = "T"

    def __init__(
        self,
        scenario: Iterable[Any] = (),
        *,
        api_key: str = "test-key",
        market: str = "stocks",
        max_connections: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(scenario, host=host, port=port, max_connections=max_connections)
        self.api_key, self.market = api_key, market
        self._day_volume: dict[tuple[str, Any], dict[Any, float]] = {}  # (sym, day) -> {start: volume}
        self._day_open: dict[tuple[str, Any], tuple[Any, float]] = {}  # (sym, day) -> (start, open)

    @property
    def host_port(self) -> str:
        """`127.0.0.1:PORT`, what the client's `feed` argument expects."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Full URL, e.g. `ws://127.0.0.1:PORT/stocks`."""
        return f"ws://{self.host_port}/{self.market}"

    # ----- handshake and client messages -----------------------------------------------------

    def accepts_path(self, path: str) -> bool:
        return path == f"/{self.market}"

    async def greet(self, session: Session) -> None:
        await self.send(session, _status("connected", "Connected Successfully"))

    def decode(self, session: Session, data: bytes | str) -> Any:
        try:
            return json.loads(data)
        except ValueError as error:
            return Undecodable(data, str(error))

    async def on_client_message(self, session: Session, message: Any) -> None:
        action = message.get("action") if isinstance(message, dict) else None
        params = message.get("params") if isinstance(message, dict) else None
        if action == "auth" and not session.authenticated:
            await self.admit(session, params == self.api_key)
        elif action == "auth":
            await self.send(session, self.auth_success_messages())
        elif action in ("subscribe", "unsubscribe") and not session.authenticated:
            await self.send(session, _status("error", "not authenticated"))
        elif action in ("subscribe", "unsubscribe") and isinstance(params, str):
            await self._change_subscriptions(session, params, adding=action == "subscribe")
        else:
            await self.send(session, _status("error", f"invalid message: {message!r}"))

    async def _change_subscriptions(self, session: Session, params: str, adding: bool) -> None:
        updated = {channel: set(symbols) for channel, symbols in session.subscriptions.items()}
        replies = []
        for topic in filter(None, (part.strip() for part in params.split(","))):
            channel, _, symbol = topic.partition(".")
            if not symbol:
                replies.append(_status("error", f"invalid subscription: {topic}"))
                continue
            symbols = updated.setdefault(channel, set())
            symbols.add(symbol) if adding else symbols.discard(symbol)
            verb = "subscribed to" if adding else "unsubscribed to"
            replies.append(_status("success", f"{verb}: {topic}"))
        await self.update_subscriptions(session, updated, replies)

    # ----- encoding ------------------------------------------------------------------------------

    async def send(self, session: Session, messages: list[Message]) -> None:
        await session.ws.send(json.dumps(messages))

    def channel_for(self, event: Trade | Bar, bar_channel: str | None) -> str:
        return "T" if isinstance(event, Trade) else bar_channel or "AM"

    def encode_event(self, event: Trade | Bar, channel: str) -> Message:
        if isinstance(event, Trade):
            return {
                "ev": "T",
                "sym": event.symbol,
                "x": event.exchange if isinstance(event.exchange, int) else 4,
                "i": str(event.id),
                "z": event.tape if isinstance(event.tape, int) else 3,
                "p": event.price,
                "s": event.size,
                "c": list(event.conditions or []),
                "t": _millis(event.timestamp),
                "q": event.id,
            }
        window = timedelta(seconds=1) if channel == "A" else timedelta(minutes=1)
        accumulated, official_open = self._day_totals(event)
        return {
            "ev": channel,
            "sym": event.symbol,
            "v": event.volume,
            "av": accumulated,
            "op": official_open,
            "vw": event.effective_vwap,
            "o": event.open,
            "c": event.close,
            "h": event.high,
            "l": event.low,
            "a": event.effective_vwap,
            "z": int(event.volume // max(event.trade_count, 1)),
            "s": _millis(event.timestamp),
            "e": _millis(event.timestamp + window),
        }

    def _day_totals(self, bar: Bar) -> tuple[float, float]:
        """Today's accumulated volume up to `bar` and the day's first open (idempotent per bar)."""
        key = (bar.symbol, bar.timestamp.astimezone(NEW_YORK).date())
        volumes = self._day_volume.setdefault(key, {})
        volumes[bar.timestamp] = bar.volume
        first = self._day_open.get(key)
        if first is None or bar.timestamp < first[0]:
            first = self._day_open[key] = (bar.timestamp, bar.open)
        return sum(v for start, v in volumes.items() if start <= bar.timestamp), first[1]

    def error_messages(self, code: int, message: str | None) -> list[Message]:
        return _status("error", message or f"error {code}")

    def auth_success_messages(self) -> list[Message]:
        return _status("auth_success", "authenticated")

    def auth_failed_messages(self) -> list[Message]:
        return _status("auth_failed", "authentication failed")

    def rejection_messages(self, code: int, message: str | None) -> list[Message]:
        if code == 406:
            return self.connection_limit_messages()
        return _status("auth_failed", message or "authentication failed")

    def connection_limit_messages(self) -> list[Message]:
        return _status("max_connections", MAX_CONNECTIONS_MESSAGE)
