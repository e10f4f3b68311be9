"""WebSocket /ws on a real uvicorn server with a real client: subscriptions, fan-out, slow clients."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from tests.helpers import wait_until
from tests.storage_fixtures import migrated_database
from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Tick
from tradebot.common.streams import tick_stream_for
from tradebot.ui.live import Hub

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PARTITIONS = 8


def ticks(symbol: str, n: int, price: float = 100.0) -> list[Tick]:
    return [
        Tick.create(symbol, price + i * 0.01, 1 + i % 5, START + timedelta(seconds=i), trade_id=i) for i in range(n)
    ]


async def publish(bus: Bus, events: list[Tick]) -> None:
    for i in range(0, len(events), 1000):
        await bus.publish([(tick_stream_for(t.symbol, PARTITIONS), t) for t in events[i : i + 1000]])


@pytest.fixture
async def server(database_url: str, redis_url: str, bus: Bus) -> AsyncIterator[tuple[str, Hub]]:
    """The API on a free port; yields its ws:// URL and the hub."""
    dsn = await migrated_database(database_url, "live_ws_test")
    settings = Settings(_env_file=None, database_url=dsn, redis_url=redis_url, ws_queue_size=1000)
    app = create_app(settings)
    # Small kernel send buffers (inherited by accepted sockets): a client that stops reading
    # backs up into the server within a few hundred messages, not megabytes.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    serving = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(serving.serve(sockets=[listener]))
    await wait_until(lambda: serving.started, what="uvicorn to start")
    yield f"ws://127.0.0.1:{port}/ws", app.state.hub
    serving.should_exit = True
    await task


async def request(ws: ClientConnection, **message: object) -> dict:
    await ws.send(json.dumps(message))
    return json.loads(await ws.recv())


async def subscribed(url: str, channels: list[str], symbols: list[str], **options: object) -> ClientConnection:
    ws = await websockets.connect(url, **options)  # type: ignore[arg-type]
    reply = await request(ws, action="subscribe", channels=channels, symbols=symbols)
    assert reply["type"] == "subscribed"
    return ws


async def stalled_client(url: str, channels: list[str], symbols: list[str]) -> socket.socket:
    """A client that subscribes and then never reads again, on a socket with a tiny receive buffer
    (a browser tab that froze): what it is sent backs up into the server within a few messages."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    assert (await asyncio.wait_for(loop.sock_recv(sock, 4096), 30)).startswith(b"HTTP/1.1 101")
    payload = json.dumps({"action": "subscribe", "channels": channels, "symbols": symbols}).encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    await loop.sock_sendall(
        sock, bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    return sock


async def frame_events(ws: ClientConnection) -> list[dict]:
    """The events of the next frame: a JSON array of them (replies are objects, not events)."""
    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert isinstance(frame, list), f"an event frame is a JSON array, got {frame!r}"
    return frame


async def events_of(ws: ClientConnection, n: int) -> list[dict]:
    """The next ``n`` events, however many frames they come in (a frame never splits an event)."""
    events: list[dict] = []
    while len(events) < n:
        events += await frame_events(ws)
    assert len(events) == n, f"{len(events) - n} events more than expected"
    return events


async def test_subscribe_and_unsubscribe_reply_with_the_full_lists(server: tuple[str, Hub]) -> None:
    async with websockets.connect(server[0]) as ws:
        reply = await request(ws, action="subscribe", channels=["ticks", "bars"], symbols=["aapl", "MSFT"])
        assert reply == {"type": "subscribed", "channels": ["bars", "ticks"], "symbols": ["AAPL", "MSFT"]}
        reply = await request(ws, action="unsubscribe", channels=["ticks"], symbols=["MSFT"])
        assert reply == {"type": "subscribed", "channels": ["bars"], "symbols": ["AAPL"]}


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("not json", "Invalid JSON"),
        (json.dumps({"action": "watch", "channels": ["ticks"]}), "action"),
        (json.dumps({"action": "subscribe", "channels": ["gossip"]}), "unknown channel"),
        (json.dumps({"action": "subscribe", "channels": ["ticks"], "symbols": ["a b"]}), "invalid symbol"),
        (json.dumps({"action": "subscribe", "extra": 1}), "extra"),
    ],
)
async def test_a_bad_request_is_an_error_and_changes_nothing(server: tuple[str, Hub], message: str, says: str) -> None:
    async with websockets.connect(server[0]) as ws:
        await request(ws, action="subscribe", channels=["ticks"], symbols=["AAPL"])
        await ws.send(message)
        reply = json.loads(await ws.recv())
        assert reply["type"] == "error"
        assert says.lower() in reply["message"].lower()
        unchanged = await request(ws, action="subscribe", channels=[], symbols=[])
        assert unchanged == {"type": "subscribed", "channels": ["ticks"], "symbols": ["AAPL"]}


async def test_ticks_reach_only_their_symbols_subscribers_and_move_the_live_bar(
    server: tuple[str, Hub], bus: Bus
) -> None:
    url, hub = server
    async with await subscribed(url, ["ticks", "bars"], ["AAPL"]) as ws:
        await wait_until(lambda: hub.following, what="the hub following the streams")
        await publish(bus, [*ticks("MSFT", 5), *ticks("AAPL", 3)])
        got: list[dict] = []
        while sum(e["channel"] == "ticks" for e in got) < 3 or got[-1]["channel"] != "bars":
            got += await frame_events(ws)  # a read's ticks, then the bar they moved in its last state
        assert {e["symbol"] for e in got} == {"AAPL"}
        assert [e["data"]["price"] for e in got if e["channel"] == "ticks"] == [100.0, 100.01, 100.02]
        bars = [e["data"] for e in got if e["channel"] == "bars"]
        assert [b["close"] for b in bars] == sorted(b["close"] for b in bars)  # in order; maybe fewer than ticks
        assert bars[-1] == {
            "time": int(START.timestamp()),
            "open": 100.0,
            "high": 100.02,
            "low": 100.0,
            "close": 100.02,
            "volume": 6,
        }


async def test_fan_out_gives_every_one_of_ten_clients_every_event(server: tuple[str, Hub], bus: Bus) -> None:
    url, hub = server
    clients = [await subscribed(url, ["ticks"], ["*"]) for _ in range(10)]
    try:
        await wait_until(lambda: len(hub.subscribers) == 10 and hub.following, what="ten subscriptions")
        sent = ticks("NVDA", 200)
        await publish(bus, sent)
        received = await asyncio.gather(*(events_of(ws, 200) for ws in clients))
        for events in received:
            assert [e["data"]["id"] for e in events] == [t.id for t in sent]
    finally:
        for ws in clients:
            await ws.close()


async def test_a_stalled_client_is_dropped_while_the_others_keep_up(server: tuple[str, Hub], bus: Bus) -> None:
    url, hub = server
    stalled = await stalled_client(url, ["ticks"], ["*"])
    healthy = await subscribed(url, ["ticks"], ["*"])
    try:
        await wait_until(lambda: len(hub.subscribers) == 2 and hub.following, what="two subscriptions")
        sent, received = ticks("AMD", 5000), []
        for batch in range(0, len(sent), 1000):  # the healthy client keeps up; the stalled one never reads
            await publish(bus, sent[batch : batch + 1000])
            received += [e["data"]["id"] for e in await events_of(healthy, 1000)]
        assert received == [t.id for t in sent]
        await wait_until(lambda: hub.dropped >= 1 and len(hub.subscribers) == 1, what="the stalled client dropped")
    finally:
        stalled.close()
        await healthy.close()
