"""Machinery shared by the Alpaca and Polygon stream emulators.

Each client connection becomes a `Session`. A reader task handles the client's frames
(auth, subscribe) through the subclass; a player task plays the shared scenario on the
session once its client has subscribed (see `scenario.py` for the rules). Runtime calls such
as `push_trade` go to every open, subscribed session. All state changes notify one Condition,
so tests wait for conditions (`wait_for_subscription`, `wait_for_connections`, ...) instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from . import scenario as sc
from .background import BackgroundLoop, Observable
from .events import Bar, Trade

Message = dict[str, Any]


@dataclass(frozen=True)
class Undecodable:
    """A client frame the emulator could not decode (kept in `Session.received`)."""

    data: bytes | str
    error: str


@dataclass(eq=False)
class Session:
    """One client connection as the emulator sees it."""

    number: int
    path: str
    headers: Any  # websockets Headers: case-insensitive lookups
    ws: ServerConnection = field(repr=False)
    authenticated: bool = False
    # "ok", "bad_credentials", "rejected:<code>" or "connection_limit"
    auth_result: str | None = None
    subscriptions: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    # decoded client messages, in order
    received: list[Any] = field(default_factory=list)
    closed: bool = False
    subscribed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def is_open(self) -> bool:
        """Open and not being dropped (the WebSocket state lags behind a deliberate drop)."""
        return not self.closed and self.ws.state is State.OPEN

    def subscribed_to(self, channel: str, symbol: str) -> bool:
        """Whether data for `symbol` on `channel` should reach this client."""
        symbols = self.subscriptions.get(channel, set())
        return symbol in symbols or "*" in symbols


class WebSocketEmulator(Observable):
    """Base class: subclasses speak the provider protocol, this class runs servers and scenarios."""

    #: channel used by wait_for_subscription when none is given
    default_channel = "trades"

    def __init__(
        self,
        scenario: Iterable[Any] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int | None = None,
    ) -> None:
        super().__init__()
        self.host, self._requested_port = host, port
        self.max_connections = max_connections
        self._steps = collections.deque(sc.normalize(scenario))
        self._performing = False
        self._sessions: list[Session] = []
        self._background = BackgroundLoop(type(self).__name__)
        self._server: Server | None = None
        self._scenario_lock: asyncio.Lock | None = None
        self.port = 0

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving on a free port (or the one given) in a background thread."""
        self._background.start()
        self._background.call(self._start_server())
        return self

    async def _start_server(self) -> None:
        self._scenario_lock = asyncio.Lock()
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._check_request,
            close_timeout=2,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Abort every connection (clients see 1006), stop the server and its thread."""
        if self._server is not None:
            self._background.call(self._stop_server())
        self._background.stop()

    async def _stop_server(self) -> None:
        # Abort rather than close: a graceful close waits for the client, and a client living on
        # the loop of the async test that is calling stop() could never answer (deadlock).
        with self.changing():
            for session in self._sessions:
                session.closed = True
                session.ws.transport.abort()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        # In a thread, so the caller's loop (and any client living on it) keeps running.
        await asyncio.to_thread(self.stop)

    # ----- observation -----------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        """Every connection so far, oldest first."""
        with self._condition:
            return list(self._sessions)

    @property
    def connections(self) -> int:
        """How many WebSocket connections were accepted so far."""
        return len(self.sessions)

    @property
    def active_connections(self) -> int:
        """How many connections are open right now."""
        return sum(session.is_open for session in self.sessions)

    @property
    def auth_results(self) -> list[str]:
        """Outcome of every authentication attempt, in connection order."""
        return [s.auth_result for s in self.sessions if s.auth_result is not None]

    @property
    def received(self) -> list[Any]:
        """Every decoded client message over all connections."""
        return [message for session in self.sessions for message in session.received]

    @property
    def steps_remaining(self) -> int:
        """Scenario steps not played yet."""
        with self._condition:
            return len(self._steps)

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        """Block until at least `count` connections have been accepted in total."""
        self.wait_until(lambda: self.connections >= count, timeout, f"{count} connection(s)")

    def wait_for_subscription(
        self, symbols: Iterable[str], channel: str | None = None, timeout: float = 5.0
    ) -> Session:
        """Block until an open, authenticated session subscribes to all `symbols` on `channel`."""
        channel, wanted = channel or self.default_channel, list(symbols)

        def subscribed_session() -> Session | None:
            return next(
                (
                    s
                    for s in self._sessions
                    if s.is_open and s.authenticated and all(s.subscribed_to(channel, sym) for sym in wanted)
                ),
                None,
            )

        return self.wait_until(subscribed_session, timeout, f"subscription to {channel} {wanted}")

    def wait_for_scenario(self, timeout: float = 5.0) -> None:
        """Block until every scenario step has been played."""
        self.wait_until(
            lambda: not self._steps and not self._performing,
            timeout,
            f"{self.steps_remaining} scenario step(s)",
        )

    async def wait_for_connections_async(self, count: int, timeout: float = 5.0) -> None:
        """Async twin of `wait_for_connections`."""
        await asyncio.to_thread(self.wait_for_connections, count, timeout)

    async def wait_for_subscription_async(
        self, symbols: Iterable[str], channel: str | None = None, timeout: float = 5.0
    ) -> Session:
        """Async twin of `wait_for_subscription`."""
        return await asyncio.to_thread(self.wait_for_subscription, symbols, channel, timeout)

    async def wait_for_scenario_async(self, timeout: float = 5.0) -> None:
        """Async twin of `wait_for_scenario`."""
        await asyncio.to_thread(self.wait_for_scenario, timeout)

    # ----- runtime control (any thread except the emulator's own) ----------------------------

    def push(self, step: Any) -> int:
        """Play one step on every open subscribed session now; returns how many got it."""
        (step,) = sc.normalize([step])
        return self._background.call(self._broadcast(step))

    def push_trade(self, trade: Trade | None = None, **fields: Any) -> int:
        """Send a trade (a `Trade` or its fields) to every subscribed client."""
        return self.push(sc.Send([trade or Trade(**fields)]))

    def push_bar(self, bar: Bar | None = None, bar_channel: str | None = None, **fields: Any) -> int:
        """Send a bar (a `Bar` or its fields) to every subscribed client."""
        return self.push(sc.Send([bar or Bar(**fields)], bar_channel=bar_channel))

    def drop(self, reset: bool = False) -> int:
        """Abruptly end every open connection (no close frame)."""
        return self.push(sc.Drop(reset))

    def close(self, code: int = 1000, reason: str = "") -> int:
        """Close every open connection cleanly with `code`."""
        return self.push(sc.Close(code, reason))

    async def _broadcast(self, step: sc.Step) -> int:
        # Unsubscribed sessions get no market data (filtered per event) but can still be dropped.
        results = [await self._perform(session, step) for session in self.sessions if session.is_open]
        return sum(results)

    # ----- connection handling -----------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.accepts_path(request.path):
            return connection.respond(404, f"unknown path {request.path}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        with self.changing():
            session = Session(len(self._sessions) + 1, ws.request.path, ws.request.headers, ws)
            self._sessions.append(session)
        player = asyncio.create_task(self._play(session))
        try:
            await self.greet(session)
            async for data in ws:
                message = self.decode(session, data)
                with self.changing():
                    session.received.append(message)
                await self.on_client_message(session, message)
        except ConnectionClosed:
            pass
        finally:
            player.cancel()
            with self.changing():
                session.closed = True

    async def admit(self, session: Session, credentials_ok: bool) -> None:
        """Finish an auth attempt: bad creds, scripted rejection, connection limit, or success."""
        if not credentials_ok:
            await self._refuse(session, "bad_credentials", self.auth_failed_messages())
            return
        with self._condition:
            rejection = self._steps[0] if self._steps and isinstance(self._steps[0], sc.RejectAuth) else None
        if rejection:
            self._advance(dequeue=True, performing=False)
            await self._refuse(
                session,
                f"rejected:{rejection.code}",
                self.rejection_messages(rejection.code, rejection.message),
            )
            return
        others = [s for s in self.sessions if s is not session and s.is_open and s.authenticated]
        if self.max_connections is not None and len(others) >= self.max_connections:
            await self._refuse(session, "connection_limit", self.connection_limit_messages())
            return
        with self.changing():
            session.authenticated, session.auth_result = True, "ok"
        await self.send(session, self.auth_success_messages())

    async def _refuse(self, session: Session, result: str, messages: list[Message]) -> None:
        with self.changing():
            session.auth_result = result
        await self.send(session, messages)
        await session.ws.close(1008, result)

    async def update_subscriptions(
        self, session: Session, subscriptions: Mapping[str, set[str]], reply: list[list[Message]]
    ) -> None:
        """Send the subscription acknowledgement(s), then publish the new state to waiters."""
        for frame in reply:
            await self.send(session, frame)
        with self.changing():
            session.subscriptions = collections.defaultdict(set, {k: set(v) for k, v in subscriptions.items()})
            session.subscribed.set()

    # ----- scenario playing --------------------------------------------------------------------

    async def _play(self, session: Session) -> None:
        await session.subscribed.wait()
        assert self._scenario_lock is not None
        async with self._scenario_lock:
            while session.is_open:
                with self._condition:
                    step = self._steps[0] if self._steps else None
                if step is None or isinstance(step, sc.RejectAuth):
                    return  # nothing left, or the next step belongs to a future connection
                if isinstance(step, sc.Gate):
                    # Still queued while waiting, so if this connection dies a reconnect waits too.
                    await step.wait()
                    self._advance(dequeue=True, performing=False)
                    continue
                # Dequeued before sending: a step cut short by a disconnect is not replayed.
                self._advance(dequeue=True, performing=True)
                try:
                    await self._perform(session, step)
                finally:
                    self._advance(dequeue=False, performing=False)
                if isinstance(step, (sc.Drop, sc.Close)):
                    return

    def _advance(self, dequeue: bool, performing: bool) -> None:
        """Scenario bookkeeping: drop the head step and/or flag a step being played."""
        with self.changing():
            if dequeue:
                self._steps.popleft()
            self._performing = performing

    async def _perform(self, session: Session, step: sc.Step) -> bool:
        """Play one step on one session; returns whether anything was sent or closed."""
        try:
            if isinstance(step, sc.Send):
                frames = self.event_frames(session, step)
                for frame in frames:
                    await self.send(session, frame)
                return bool(frames)
            if isinstance(step, sc.SendMessages):
                await self.send(session, list(step.messages))
            elif isinstance(step, sc.SendRaw):
                await session.ws.send(step.payload)
            elif isinstance(step, sc.SendError):
                await self.send(session, self.error_messages(step.code, step.message))
            elif isinstance(step, sc.Drop):
                with self.changing():
                    session.closed = True
                transport = session.ws.transport
                transport.abort() if step.reset else transport.close()
            elif isinstance(step, sc.Close):
                with self.changing():
                    session.closed = True
                await session.ws.close(step.code, step.reason)
            elif isinstance(step, sc.Gate):
                await step.wait()
            return True
        except ConnectionClosed:
            return False  # the client went away mid-step; like a real server we just lose the data

    def event_frames(self, session: Session, step: sc.Send) -> list[list[Message]]:
        """Encode the events this session subscribed to into frames (one, or one per event)."""
        messages = []
        for event in step.events:
            channel = self.channel_for(event, step.bar_channel)
            if session.subscribed_to(channel, event.symbol):
                messages.append(self.encode_event(event, channel))
        if not messages:
            return []
        return [messages] if step.batch else [[message] for message in messages]

    # ----- protocol hooks for subclasses --------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL a client connects to."""
        raise NotImplementedError

    def accepts_path(self, path: str) -> bool:
        """Whether a WebSocket handshake to `path` is accepted."""
        raise NotImplementedError

    async def greet(self, session: Session) -> None:
        """Send the provider's 'connected' message."""
        raise NotImplementedError

    def decode(self, session: Session, data: bytes | str) -> Any:
        """Decode one client frame (undecodable frames must not raise)."""
        raise NotImplementedError

    async def on_client_message(self, session: Session, message: Any) -> None:
        """React to one decoded client message (auth, subscribe, ...)."""
        raise NotImplementedError

    async def send(self, session: Session, messages: list[Message]) -> None:
        """Encode and send one frame holding `messages`."""
        raise NotImplementedError

    def channel_for(self, event: Trade | Bar, bar_channel: str | None) -> str:
        """The subscription channel an event travels on."""
        raise NotImplementedError

    def encode_event(self, event: Trade | Bar, channel: str) -> Message:
        """The wire message for one event."""
        raise NotImplementedError

    def error_messages(self, code: int, message: str | None) -> list[Message]:
        """Messages for a `SendError` step."""
        raise NotImplementedError

    def auth_success_messages(self) -> list[Message]:
        """Reply to good credentials."""
        raise NotImplementedError

    def auth_failed_messages(self) -> list[Message]:
        """Reply to bad credentials."""
        raise NotImplementedError

    def rejection_messages(self, code: int, message: str | None) -> list[Message]:
        """Reply for a scripted `RejectAuth`."""
        raise NotImplementedError

    def connection_limit_messages(self) -> list[Message]:
        """Reply when `max_connections` sessions are already open."""
        raise NotImplementedError
