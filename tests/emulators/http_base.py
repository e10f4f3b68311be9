"""Machinery shared by the REST emulators: uvicorn in a background thread, request log,
count-based failure injection (including a server that stalls) and an auth hook.

Every request is recorded (`requests`), then - in this order - answered by the next matching
injected `Failure`, rejected by the subclass's `authenticate`, or routed to the endpoint. A stalled
request (`stall_next`) sends nothing until `release_stalls()` or `stop()`, then a 504.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .background import CALL_TIMEOUT, BackgroundLoop, Observable
from .scenario import Gate


@dataclass
class Failure:
    """Answer the next `count` requests whose path starts with `path_prefix` with `status`."""

    status: int
    count: int = 1
    path_prefix: str = ""
    body: Any = None  # None: the provider's usual body for that status
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False  # send nothing until release_stalls() or stop(), then the status


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator received it, with the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int


class HttpEmulator(Observable):
    """Base class: subclasses provide `routes()`, `authenticate()` and `failure_body()`."""

    def __init__(self, *, failures: Iterable[Failure] = (), host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self.host, self._requested_port, self.port = host, port, 0
        self._failures = list(failures)
        self._requests: list[RecordedRequest] = []
        self._stalls, self._stall_gate = 0, Gate()
        self._background = BackgroundLoop(type(self).__name__)
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Future[None] | None = None
        self.app = Starlette(
            routes=self.routes(),
            middleware=[Middleware(BaseHTTPMiddleware, dispatch=self._dispatch)],
        )

    @property
    def url(self) -> str:
        """Base URL without a path, e.g. `http://127.0.0.1:PORT`."""
        return f"http://{self.host}:{self.port}"

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port now (so clients can connect at once) and serve from a background thread."""
        sock = socket.create_server((self.host, self._requested_port))
        # Accepted sockets inherit TCP_NODELAY; without it uvicorn's split header/body writes stall
        # every keep-alive request ~40 ms on delayed ACKs when serving a pre-bound socket.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)  # not in the main thread: installs no signal handlers
        self._background.start()
        self._serving = asyncio.run_coroutine_threadsafe(self._server.serve(sockets=[sock]), self._background.loop)
        return self

    def stop(self) -> None:
        """Shut uvicorn down and stop the thread."""
        self.release_stalls()
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            self._serving.result(CALL_TIMEOUT)
        self._server = self._serving = None
        self._background.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run until KeyboardInterrupt (for `python -m tests.emulators`)."""
        with self:
            print(f"{type(self).__name__} on {self.url}; Ctrl-C to stop")
            try:
                self.wait_until(lambda: False, timeout=10**9, what="Ctrl-C")
            except KeyboardInterrupt:
                print("bye")

    # ----- failure injection and observation -------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        path_prefix: str = "",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `count` matching requests with `status` (e.g. 429, 500)."""
        with self.changing():
            self._failures.append(Failure(status, count, path_prefix, body, headers or {}))

    def stall_next(self, count: int = 1, path_prefix: str = "") -> None:
        """Leave the next `count` matching requests unanswered (a server that stalls, not one that
        refuses) until `release_stalls()` or `stop()`; they are then answered 504 and recorded."""
        with self.changing():
            self._failures.append(Failure(504, count, path_prefix, stall=True))

    def release_stalls(self) -> None:
        """Answer the requests stalled so far; later stalls wait for the next release."""
        with self.changing():
            gate, self._stall_gate = self._stall_gate, Gate()
        gate.open()

    @property
    def stalls(self) -> int:
        """Requests that have started stalling so far."""
        with self._condition:
            return self._stalls

    @property
    def failures_pending(self) -> int:
        """Injected failures not served yet."""
        with self._condition:
            return sum(failure.count for failure in self._failures)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first."""
        with self._condition:
            return list(self._requests)

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        """Requests whose path starts with `path_prefix`."""
        return [request for request in self.requests if request.path.startswith(path_prefix)]

    def wait_for_requests(self, count: int, path_prefix: str = "", timeout: float = 5.0) -> None:
        """Block until at least `count` matching requests have been answered."""
        self.wait_until(
            lambda: len(self.requests_to(path_prefix)) >= count,
            timeout,
            f"{count} request(s) to {path_prefix or '/'}",
        )

    # ----- request pipeline --------------------------------------------------------------------

    async def _dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await self._injected_failure(request.url.path) or self.authenticate(request)
        if response is None:
            response = await call_next(request)
        with self.changing():
            self._requests.append(
                RecordedRequest(
                    request.method,
                    request.url.path,
                    dict(request.query_params),
                    dict(request.headers),
                    response.status_code,
                )
            )
        return response

    async def _injected_failure(self, path: str) -> Response | None:
        with self.changing():
            failure = next((f for f in self._failures if path.startswith(f.path_prefix)), None)
            if failure is None:
                return None
            failure.count -= 1
            if failure.count <= 0:
                self._failures.remove(failure)
            if failure.stall:
                self._stalls += 1
                gate = self._stall_gate
        if failure.stall:
            await gate.wait()
        body = failure.body if failure.body is not None else self.failure_body(failure.status)
        return JSONResponse(
            body,
            failure.status,
            headers={**self.failure_headers(failure.status), **failure.headers},
        )

    # ----- hooks for subclasses ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The provider's endpoints."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> Response | None:
        """An error response for bad credentials, or None to let the request through."""
        raise NotImplementedError

    def failure_body(self, status: int) -> Any:
        """The provider's usual JSON body for an error `status`."""
        raise NotImplementedError

    def failure_headers(self, status: int) -> dict[str, str]:
        """Extra headers the provider sends with an error `status`."""
        return {}
