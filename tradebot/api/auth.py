"""Who may change things, and who may reach the API at all.

Reads are open to whoever can connect, which by default is only this machine (API_HOST=127.0.0.1).
Every mutating endpoint needs ``Authorization: Bearer <API_TOKEN>``; binding beyond loopback without
a token refuses to start, and request bodies are capped at API_MAX_BODY_BYTES.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradebot.api.deps import SettingsDep
from tradebot.common.config import Settings, SettingsError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_exposure(settings: Settings) -> None:
    """Refuse, in one line, to serve beyond this machine without a token."""
    if settings.api_host not in LOOPBACK and settings.api_token is None:
        raise SettingsError(
            f"API_HOST={settings.api_host} exposes the API beyond this machine without a token: "
            "set API_TOKEN (or API_HOST=127.0.0.1)"
        )


async def require_token(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(description="Bearer <API_TOKEN>")] = None,
) -> None:
    """403 when no API_TOKEN is configured, 401 when the request's bearer token is missing or wrong."""
    if settings.api_token is None:
        raise HTTPException(status_code=403, detail="this endpoint is disabled: set API_TOKEN to enable it")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            status_code=401,
            detail="missing bearer token: send 'Authorization: Bearer <API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), settings.api_token.get_secret_value().encode()):
        raise HTTPException(status_code=401, detail="wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


TokenDep = Annotated[None, Depends(require_token)]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLargeError:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = f'{{"detail":"request body over {self.max_bytes} bytes; see API_MAX_BODY_BYTES"}}'.encode()
        headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLargeError(Exception):
    """A streamed body passed the limit."""
