"""WebSocket clients for the fan-out bench, in a process of their own (``python -m tradebot.bench.ws_clients``).

The bench measures what the fan-out costs the pipeline, so the clients stay out of the bench
process and do as little as a client can: each subscribes, then counts the events it receives
(``"channel":`` occurrences in each frame, without parsing the JSON). Protocol with the parent:
one line ``ready`` on stdout once every client is subscribed; when stdin closes, one JSON line with
what each client received, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import websockets
from websockets.asyncio.client import ClientConnection

EVENT_MARK = '"channel":'


class Client:
    """One connection subscribed to ``channels`` of every symbol."""

    def __init__(self) -> None:
        self.events = 0
        self.frames = 0
        self.dropped = False  # the server closed the connection (a slow client is closed with 1013)
        self.close_code: int | None = None
        self.connection: ClientConnection | None = None

    async def run(self, url: str, channels: list[str], subscribed: asyncio.Event) -> None:
        try:
            async with websockets.connect(url, max_queue=None, max_size=None, open_timeout=30) as ws:
                self.connection = ws
                await ws.send(json.dumps({"action": "subscribe", "channels": channels, "symbols": ["*"]}))
                await ws.recv()  # the "subscribed" reply
                subscribed.set()
                async for frame in ws:
                    self.frames += 1
                    self.events += frame.count(EVENT_MARK) if isinstance(frame, str) else 0
        except websockets.ConnectionClosed as closed:
            self.dropped = True
            self.close_code = closed.rcvd.code if closed.rcvd else None
        except (OSError, TimeoutError, websockets.InvalidHandshake):
            self.dropped = True  # never connected: reported, not raised, so the others still count
        else:
            self.dropped = True  # the server ended the stream; the parent stops us by closing stdin
        finally:
            subscribed.set()

    def report(self) -> dict[str, object]:
        return {"events": self.events, "frames": self.frames, "dropped": self.dropped, "close_code": self.close_code}


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def main(url: str, count: int, channels: list[str]) -> None:
    clients = [Client() for _ in range(count)]
    ready = [asyncio.Event() for _ in clients]
    tasks = [asyncio.create_task(c.run(url, channels, r)) for c, r in zip(clients, ready, strict=True)]
    await asyncio.gather(*(r.wait() for r in ready))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await _stdin_closed()
    sys.stdout.write(json.dumps([c.report() for c in clients]) + "\n")
    sys.stdout.flush()
    for client in clients:  # no closing handshake: it would wait behind everything still in flight
        if client.connection is not None:
            client.connection.transport.abort()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--channels", default="ticks", help="comma-separated")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.clients, args.channels.split(",")))
