"""WebSocket /ws: subscribe and unsubscribe by channel and symbol; live events from the hub.

Client → server, one JSON object per message::

    {"action": "subscribe", "channels": ["ticks", "bars"], "symbols": ["AAPL"]}
    {"action": "unsubscribe", "channels": ["ticks"]}          # symbols omitted: channels only

Server → client: ``{"type": "subscribed", "channels": [...], "symbols": [...]}`` after every change
(the full current lists), ``{"type": "error", "message": ...}`` for a bad request (nothing
changes), and events in frames that are JSON arrays of ``{"channel", "symbol", "data"}`` (what
gathered since the client's last frame, in stream order). ``"*"`` subscribes to every symbol. A
client that falls more than its bound of messages behind is closed with code 1013 ("slow client").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradebot.common.models import SYMBOL_PATTERN
from tradebot.ui.live import ALL_SYMBOLS, CHANNELS, Hub, Subscriber

router = APIRouter(tags=["live"])
SLOW_CLIENT = 1013  # "try again later"
CLOSE_TIMEOUT_S = 2.0
_SYMBOL = re.compile(SYMBOL_PATTERN)


class Request(BaseModel):
    """One subscribe or unsubscribe message."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(pattern="^(subscribe|unsubscribe)$")
    channels: list[str] = Field(default_factory=list, max_length=len(CHANNELS))
    symbols: list[str] = Field(default_factory=list, max_length=10_000)


def apply(subscriber: Subscriber, raw: str) -> dict[str, Any]:
    """Apply one client message; the reply to send (an error changes nothing)."""
    try:
        request = Request.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        return {"type": "error", "message": f"{where}: {first['msg']}"}
    unknown = [c for c in request.channels if c not in CHANNELS]
    if unknown:
        return {"type": "error", "message": f"unknown channel(s) {unknown}; use {list(CHANNELS)}"}
    symbols = {s.strip().upper() for s in request.symbols}
    bad = sorted(s for s in symbols if s != ALL_SYMBOLS and not _SYMBOL.fullmatch(s))
    if bad:
        return {"type": "error", "message": f"invalid symbol(s) {bad}: tickers like AAPL, or '*' for all"}
    if request.action == "subscribe":
        subscriber.channels |= set(request.channels)
        subscriber.symbols |= symbols
    else:
        subscriber.channels -= set(request.channels)
        subscriber.symbols -= symbols
    return {"type": "subscribed", "channels": sorted(subscriber.channels), "symbols": sorted(subscriber.symbols)}


@router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    """Stream live events to one client until it leaves or falls behind."""
    hub: Hub | None = websocket.app.state.hub
    await websocket.accept()
    if hub is None:
        await websocket.close(code=1011, reason="live streams need REDIS_URL")
        return
    subscriber = hub.subscribe()
    tasks = [
        asyncio.create_task(_send(websocket, subscriber)),
        asyncio.create_task(_receive(websocket, subscriber)),
        asyncio.create_task(subscriber.dropped.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.unsubscribe(subscriber)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if subscriber.slow:
        # a stalled client may never read the close frame; do not wait on it for long
        with contextlib.suppress(TimeoutError, RuntimeError, OSError):
            await asyncio.wait_for(websocket.close(code=SLOW_CLIENT, reason="slow client"), CLOSE_TIMEOUT_S)


async def _receive(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        subscriber.reply(json.dumps(apply(subscriber, await websocket.receive_text())))


async def _send(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        await subscriber.ready.wait()
        frame = subscriber.next_frame()
        if frame is not None:
            await websocket.send_text(frame)
