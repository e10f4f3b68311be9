"""Emulator of Alpaca's market-data stream v2 (`wss://stream.data.alpaca.markets/v2/{feed}`).

Protocol facts reproduced (see /work/shared/reference/protocols.md §1):

* Paths `/v2/iex`, `/v2/sip`, `/v2/delayed_sip`, `/v2/test`; anything else gets HTTP 404.
* Every server frame is an array of messages. Frames are msgpack (binary) when the handshake
  has `Content-Type: application/msgpack` - alpaca-py always sends it - else JSON (text).
* In msgpack mode `t` is a msgpack Timestamp extension (alpaca-py calls `t.to_datetime()`);
  in JSON mode it is an RFC-3339 string.
* `[{"T":"success","msg":"connected"}]` on connect; `{"action":"auth","key","secret"}` gets
  `[{"T":"success","msg":"authenticated"}]`, or error 402 `auth failed` for wrong credentials
  (then the connection is closed with 1008). Auth twice gives 403, subscribing first gives 401,
  an unknown action or undecodable frame gives 400.
* More than `max_connections` authenticated connections (default 1, like most plans) gives
  error 406 `connection limit exceeded` as the auth reply, then a close.
* Subscribe/unsubscribe are additive/subtractive per channel; the reply is the full list
  `[{"T":"subscription","trades":[..],"quotes":[..],"bars":[..],...}]`, with `corrections` and
  `cancelErrors` following `trades`. Optional `symbol_limit` gives 405 (trades + quotes).
* Data: trades `{"T":"t","S","i","x","p","s","c","t","z"}`; bars `{"T":"b"|"u"|"d","S","o","h",
  "l","c","v","t","n","vw"}` (alpaca-py's Bar model requires `n` and `vw`). Only symbols the
  connection subscribed to (or `*`) are sent.

How alpaca-py 0.44.0 `StockDataStream` reacts (checked by tests/test_emulators.py):

* Bad credentials (402) or 406: `_auth` raises `ValueError("auth failed")` /
  `ValueError("connection limit exceeded")`, which `_run_forever` only logs
  ("error during websocket communication: auth failed") before reconnecting with backoff
  (about 0.5-1 s, doubling to 30 s), forever. Nothing reaches your code except the log.
* 409 `insufficient subscription` as the auth reply (`RejectAuth(409)`) makes `run()` return.
* Error frames after auth (`SendError`) are only logged: "error: <msg> (<code>)".
* Any close, even 1000, and any drop make it reconnect, re-auth and re-send the full subscribe.
* Undecodable frames or bad fields raise inside the consume loop; they are logged and the
  rest of that frame is lost, the connection stays up.

Scenario steps supported: Send (bar_channel `bars`/`updatedBars`/`dailyBars`), SendMessages,
SendRaw, SendError, Drop, Close, RejectAuth, Gate - see scenario.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgpack

from .events import Bar, Trade
from .ws_base import Message, Session, Undecodable, WebSocketEmulator

FEEDS = ("iex", "sip", "delayed_sip", "test")
CHANNELS = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
)
BAR_TYPES = {"bars": "b", "updatedBars": "u", "dailyBars": "d"}
ERROR_MESSAGES = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}


def _json_default(value: Any) -> str:
    """Encode datetimes the way Alpaca's JSON mode does (RFC-3339, `Z`)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {value!r}")


class AlpacaStreamEmulator(WebSocketEmulator):
    """Alpaca stock data stream v2 on 127.0.0.1; point `StockDataStream(url_override=emu.url)` at it."""

    default_channel = "trades"

    def __init__(
        self,
        scenario: Iterable[Any] = (),
        *,
        key: str = "test-key",
        secret: str = "test-secret",
        feed: str = "iex",
        max_connections: int | None = 1,
        symbol_limit: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(scenario, host=host, port=port, max_connections=max_connections)
        self.key, self.secret, self.feed, self.symbol_limit = (key, secret, feed, symbol_limit)

    @property
    def url(self) -> str:
        """Full stream URL for the default feed, e.g. `ws://127.0.0.1:PORT/v2/iex`."""
        return self.url_for(self.feed)

    def url_for(self, feed: str) -> str:
        """Full stream URL for `feed` (`iex`, `sip`, `delayed_sip`, `test`)."""
        return f"ws://{self.host}:{self.port}/v2/{feed}"

    # ----- handshake and client messages -----------------------------------------------------

    def accepts_path(self, path: str) -> bool:
        return path in {f"/v2/{feed}" for feed in FEEDS}

    async def greet(self, session: Session) -> None:
        await self.send(session, [{"T": "success", "msg": "connected"}])

    def decode(self, session: Session, data: bytes | str) -> Any:
        try:
            return msgpack.unpackb(data) if isinstance(data, bytes) else json.loads(data)
        except ValueError as error:  # msgpack's and json's decode errors are ValueErrors
            return Undecodable(data, str(error))

    async def on_client_message(self, session: Session, message: Any) -> None:
        action = message.get("action") if isinstance(message, dict) else None
        if action == "auth":
            if session.authenticated:
                await self.send(session, self.error_messages(403, None))
            else:
                good = message.get("key") == self.key and message.get("secret") == self.secret
                await self.admit(session, good)
        elif action in ("subscribe", "unsubscribe"):
            if not session.authenticated:
                await self.send(session, self.error_messages(401, None))
            else:
                await self._change_subscriptions(session, message, adding=action == "subscribe")
        else:
            await self.send(session, self.error_messages(400, None))

    async def _change_subscriptions(self, session: Session, message: dict[str, Any], adding: bool) -> None:
        requested = {channel: message[channel] for channel in CHANNELS if channel in message}
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in requested.values()):
            await self.send(session, self.error_messages(400, None))
            return
        updated = {channel: set(session.subscriptions.get(channel, ())) for channel in CHANNELS}
        for channel, symbols in requested.items():
            updated[channel] = updated[channel] | set(symbols) if adding else updated[channel] - set(symbols)
        updated["corrections"] = updated["cancelErrors"] = set(updated["trades"])
        if self.symbol_limit is not None and len(updated["trades"] | updated["quotes"]) > self.symbol_limit:
            await self.send(session, self.error_messages(405, None))
            return
        reply = {"T": "subscription", **{channel: sorted(updated[channel]) for channel in CHANNELS}}
        await self.update_subscriptions(session, updated, [[reply]])

    # ----- encoding ------------------------------------------------------------------------------

    async def send(self, session: Session, messages: list[Message]) -> None:
        if "msgpack" in session.headers.get("Content-Type", ""):
            # datetime=True packs aware datetimes as the msgpack Timestamp extension.
            await session.ws.send(msgpack.packb(messages, datetime=True))
        else:
            await session.ws.send(json.dumps(messages, default=_json_default))

    def channel_for(self, event: Trade | Bar, bar_channel: str | None) -> str:
        return "trades" if isinstance(event, Trade) else bar_channel or "bars"

    def encode_event(self, event: Trade | Bar, channel: str) -> Message:
        if isinstance(event, Trade):
            return {
                "T": "t",
                "S": event.symbol,
                "i": event.id,
                "x": event.exchange or "V",
                "p": event.price,
                "s": event.size,
                "c": list(event.conditions or ["@"]),
                "z": event.tape or "C",
                "t": event.timestamp,
            }
        return {
            "T": BAR_TYPES[channel],
            "S": event.symbol,
            "o": event.open,
            "h": event.high,
            "l": event.low,
            "c": event.close,
            "v": event.volume,
            "t": event.timestamp,
            "n": event.trade_count,
            "vw": event.effective_vwap,
        }

    def error_messages(self, code: int, message: str | None) -> list[Message]:
        return [{"T": "error", "code": code, "msg": message or ERROR_MESSAGES.get(code, "error")}]

    def auth_success_messages(self) -> list[Message]:
        return [{"T": "success", "msg": "authenticated"}]

    def auth_failed_messages(self) -> list[Message]:
        return self.error_messages(402, None)

    def rejection_messages(self, code: int, message: str | None) -> list[Message]:
        return self.error_messages(code, message)

    def connection_limit_messages(self) -> list[Message]:
        return self.error_messages(406, None)
