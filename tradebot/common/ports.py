"""The ports the embedded servers listen on: a given one, or any free one (tests, benchmarks).

A free port is found by binding to port 0 and closing, so another program may take it before the
server binds it (likelier with several test sessions on one machine). A server started on
:data:`ANY_PORT` therefore tries another free port when its own was taken first, a few times,
before it gives up with one clear error. A port given by a setting is used as given: taken, it
says so (:class:`PortTakenError`, one line naming the setting).
"""

from __future__ import annotations

import logging
import socket
from typing import Protocol

from tradebot.common.config import SettingsError

log = logging.getLogger("tradebot.embedded")

ANY_PORT = 0  # a server's port: a free one of its own choosing
PORT_TRIES = 8
ADDRESS_IN_USE = "Address already in use"  # how Redis and PostgreSQL log a failed bind


class PortTakenError(SettingsError):
    """Another program listens on (or has bound) the server's port."""


class Server(Protocol):
    port: int

    def start(self) -> None: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_on_a_free_port(server: Server, what: str) -> None:
    """``server.start()`` on a free port (left in ``server.port``), on another one each time a
    program took it first; RuntimeError after PORT_TRIES ports."""
    for _ in range(PORT_TRIES):
        server.port = free_port()
        try:
            server.start()
            return
        except PortTakenError:
            log.info("embedded %s: 127.0.0.1:%d was taken before it could listen; trying another", what, server.port)
    server.port = ANY_PORT
    raise RuntimeError(f"embedded {what} found no free port: other programs took each of {PORT_TRIES} first")
