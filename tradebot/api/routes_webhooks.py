"""POST /webhooks/tradingview: a TradingView alert becomes a signal and an order on the usual path.

TradingView sends only a body (no headers of our choosing), so the alert carries the shared
WEBHOOK_SECRET; a sender that can sign adds ``X-Signature: sha256=<hex HMAC of the raw body>``, and
a signature that is present must match. The order goes to ``orders.new`` like a strategy's, so the
execution role's risk checks and broker handle it. Each ``alert_id`` is traded at most once: the
idempotency key and the publish are one script (:meth:`Bus.publish_once`), kept WEBHOOK_DEDUP_DAYS.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from tradebot.api.deps import RedisDep, SettingsDep
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.config import Settings
from tradebot.common.models import (
    MAX_PRICE,
    MAX_QUANTITY,
    MIN_PRICE,
    MIN_QUANTITY,
    SYMBOL_PATTERN,
    Event,
    Order,
    Signal,
    stable_id,
)
from tradebot.common.ratelimit import TokenBucket
from tradebot.common.streams import ORDERS_NEW, signal_stream, webhook_alert_key

router = APIRouter(tags=["webhooks"])
DAY_MS = 86_400_000


class TradingViewAlert(BaseModel):
    """The alert message to paste into TradingView (placeholders such as {{close}} allowed there)."""

    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=1, max_length=200, description="WEBHOOK_SECRET")
    alert_id: str = Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$", description="unique per alert, e.g. {{timenow}}")
    symbol: str = Field(pattern=SYMBOL_PATTERN, description="ticker, e.g. AAPL ({{ticker}})")
    side: Literal["buy", "sell"] = Field(description="{{strategy.order.action}}")
    price: float = Field(ge=MIN_PRICE, le=MAX_PRICE, description="the price the alert saw ({{close}})")
    quantity: float | None = Field(None, ge=MIN_QUANTITY, le=MAX_QUANTITY, description="default ORDER_QUANTITY")
    strategy: str = Field("tradingview", pattern=r"^[A-Za-z0-9_.\-]{1,40}$")
    time: AwareDatetime | None = Field(None, description="when the alert fired ({{timenow}}); default: received")

    @field_validator("symbol", "side", mode="before")
    @classmethod
    def _normalise(cls, value: object, info) -> object:  # type: ignore[no-untyped-def]
        if isinstance(value, str):
            return value.strip().upper() if info.field_name == "symbol" else value.strip().lower()
        return value


class WebhookOut(BaseModel):
    """What became of an alert."""

    accepted: bool
    duplicate: bool
    signal_id: str
    order_id: str


def _bucket(request: Request, settings: Settings) -> TokenBucket:
    bucket: TokenBucket | None = getattr(request.app.state, "webhook_bucket", None)
    if bucket is None:
        per_minute = settings.webhook_rate_per_minute
        bucket = request.app.state.webhook_bucket = TokenBucket(per_minute, burst=per_minute)
    return bucket


def _check_secret(settings: Settings, alert: TradingViewAlert, body: bytes, signature: str | None) -> None:
    if settings.webhook_secret is None:
        raise HTTPException(status_code=403, detail="webhooks are disabled: set WEBHOOK_SECRET to enable them")
    secret = settings.webhook_secret.get_secret_value().encode()
    if not hmac.compare_digest(alert.secret.encode(), secret):
        raise HTTPException(status_code=401, detail="wrong secret: the alert's 'secret' must equal WEBHOOK_SECRET")
    if signature is not None:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().lower(), expected):
            raise HTTPException(status_code=401, detail="bad X-Signature: expected sha256=<hex HMAC-SHA256 of body>")


def _events(alert: TradingViewAlert, settings: Settings) -> tuple[Signal, Order]:
    signal = Signal(
        id=f"tv-{stable_id('tradingview', alert.alert_id)}",
        symbol=alert.symbol,
        timestamp=alert.time or datetime.now(UTC),
        side=alert.side,
        price=alert.price,
        confidence=1.0,
        strategy=alert.strategy,
        tick_id=f"webhook:{alert.alert_id}",
    )
    return signal, Order.from_signal(signal, alert.quantity or settings.order_quantity)


@router.post(
    "/webhooks/tradingview",
    response_model=WebhookOut,
    status_code=202,
    # the body is read raw (the signature covers its exact bytes), so its schema is declared here
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TradingViewAlert.model_json_schema()}},
        }
    },
    responses={
        400: {"description": "the body is not a valid alert (the detail says which field)"},
        401: {"description": "wrong secret or signature"},
        403: {"description": "WEBHOOK_SECRET is not set"},
        429: {"description": "over WEBHOOK_RATE_PER_MINUTE"},
    },
)
async def tradingview(
    request: Request,
    settings: SettingsDep,
    redis: RedisDep,
    x_signature: Annotated[str | None, Header(description="optional: sha256=<hex HMAC of the body>")] = None,
) -> WebhookOut:
    """Trade a TradingView alert once: a signal and an order through risk and the broker."""
    wait_s = _bucket(request, settings).try_take()
    if wait_s:
        raise HTTPException(429, "too many alerts: see WEBHOOK_RATE_PER_MINUTE", {"Retry-After": str(int(wait_s) + 1)})
    body = await request.body()
    try:
        alert = TradingViewAlert.model_validate_json(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise HTTPException(status_code=400, detail=f"invalid alert: {where}: {first['msg']}") from None
    _check_secret(settings, alert, body, x_signature)
    if redis is None:
        raise HTTPException(status_code=503, detail="REDIS_URL is not configured; alerts are published on the bus")
    signal, order = _events(alert, settings)
    try:
        bus = Bus(redis, min_replicas=settings.redis_min_replicas)
        key = webhook_alert_key(alert.alert_id)
        items: list[tuple[str, Event]] = [(signal_stream(0), signal), (ORDERS_NEW, order)]  # execution's slot
        fresh = await bus.publish_once(key, int(settings.webhook_dedup_days * DAY_MS), items)
        if not fresh:  # taken before; with REDIS_MIN_REPLICAS its first try may not have reached a replica
            await bus.confirm_replicated(key)
    except RECOVERABLE_REDIS_ERRORS as error:
        raise HTTPException(status_code=503, detail=f"Redis unavailable, alert not taken; resend it: {error}") from None
    return WebhookOut(accepted=fresh, duplicate=not fresh, signal_id=signal.id, order_id=order.id)
