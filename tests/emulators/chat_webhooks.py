"""Emulator of the chat webhook APIs alerts go to: Telegram's Bot API sendMessage, Discord channel
webhooks and Slack incoming webhooks, each answering as the real one does on success.

* Telegram: `POST /bot{token}/sendMessage` with JSON `{"chat_id", "text"}` -> 200
  `{"ok": true, "result": {...}}`; a token other than `TOKEN` -> 401 `{"ok": false, "error_code": 401,
  "description": "Unauthorized"}`.
* Discord: `POST /api/webhooks/{id}/{token}` with JSON `{"content"}` -> 204 No Content.
* Slack: `POST /services/{T}/{B}/{secret}` with JSON `{"text"}` -> 200 text `ok`.
Every received message is kept in `messages` as (service, text).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .http_base import HttpEmulator

TOKEN = "123456:telegram-test-token"


class ChatWebhooksEmulator(HttpEmulator):
    """Telegram, Discord and Slack on one port."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.messages: list[tuple[str, str]] = []

    def routes(self) -> list[Route]:
        return [
            Route("/bot{token}/sendMessage", self._telegram, methods=["POST"]),
            Route("/api/webhooks/{hook_id}/{token}", self._discord, methods=["POST"]),
            Route("/services/{team}/{bot}/{secret}", self._slack, methods=["POST"]),
        ]

    def authenticate(self, request: Request) -> Response | None:
        if request.url.path.startswith("/bot") and request.url.path != f"/bot{TOKEN}/sendMessage":
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        return None

    def failure_body(self, status: int) -> Any:
        return {"ok": False, "error_code": status, "description": "injected failure"}

    async def _record(self, service: str, request: Request, field: str) -> dict[str, Any]:
        body = await request.json()
        with self.changing():
            self.messages.append((service, body[field]))
        return body

    async def _telegram(self, request: Request) -> Response:
        body = await self._record("telegram", request, "text")
        return JSONResponse({"ok": True, "result": {"message_id": len(self.messages), "chat": {"id": body["chat_id"]}}})

    async def _discord(self, request: Request) -> Response:
        await self._record("discord", request, "content")
        return Response(status_code=204)

    async def _slack(self, request: Request) -> Response:
        await self._record("slack", request, "text")
        return PlainTextResponse("ok")
