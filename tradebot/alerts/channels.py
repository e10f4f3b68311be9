"""Where alerts go: Telegram, Discord and Slack through their webhook APIs, e-mail through SMTP.

Each channel is configured by its settings and used only when they are set. Secrets (bot tokens,
webhook URLs, the SMTP password) are SecretStr and appear in no log line: errors name the channel,
never its URL.
"""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from typing import Protocol

import httpx

from tradebot.common.config import Settings

TIMEOUT_S = 10.0


class ChannelError(Exception):
    """A channel did not take a message (the notifier retries it)."""


class Channel(Protocol):
    """Something that delivers one text."""

    name: str

    async def send(self, text: str) -> None:
        """Deliver ``text`` or raise ChannelError."""


class _JsonWebhook:
    """POST a JSON body to a URL that holds the credentials."""

    def __init__(self, name: str, url: str, field: str, extra: dict[str, str] | None = None) -> None:
        self.name = name
        self._url = url
        self._field = field
        self._extra = extra or {}

    async def send(self, text: str) -> None:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                response = await client.post(self._url, json={**self._extra, self._field: text})
        except httpx.HTTPError as error:
            raise ChannelError(f"{self.name}: {type(error).__name__}") from None
        if response.status_code >= 300:
            raise ChannelError(f"{self.name}: HTTP {response.status_code}")


def telegram(token: str, chat_id: str, api_url: str) -> _JsonWebhook:
    """Telegram's Bot API sendMessage."""
    return _JsonWebhook("telegram", f"{api_url.rstrip('/')}/bot{token}/sendMessage", "text", {"chat_id": chat_id})


def discord(webhook_url: str) -> _JsonWebhook:
    """A Discord channel webhook."""
    return _JsonWebhook("discord", webhook_url, "content")


def slack(webhook_url: str) -> _JsonWebhook:
    """A Slack incoming webhook."""
    return _JsonWebhook("slack", webhook_url, "text")


class Email:
    """One message per alert over SMTP (STARTTLS when the server offers it, login when a user is set)."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, text: str) -> None:
        try:
            await asyncio.to_thread(self._send, text)
        except (OSError, smtplib.SMTPException) as error:
            raise ChannelError(f"email: {type(error).__name__}") from None

    def _send(self, text: str) -> None:
        s = self.settings
        message = EmailMessage()
        message["Subject"] = f"tradebot: {text[:80]}"
        message["From"] = s.alert_email_from
        message["To"] = s.alert_email_to
        message.set_content(text)
        with smtplib.SMTP(s.alert_smtp_host or "", s.alert_smtp_port, timeout=TIMEOUT_S) as smtp:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
            if s.alert_smtp_user and s.alert_smtp_password:
                smtp.login(s.alert_smtp_user, s.alert_smtp_password.get_secret_value())
            smtp.send_message(message)


def channels_from_settings(settings: Settings) -> list[Channel]:
    """Every channel whose settings are given."""
    found: list[Channel] = []
    if settings.alert_telegram_token and settings.alert_telegram_chat_id:
        token = settings.alert_telegram_token.get_secret_value()
        found.append(telegram(token, settings.alert_telegram_chat_id, settings.alert_telegram_api_url))
    if settings.alert_discord_webhook_url:
        found.append(discord(settings.alert_discord_webhook_url.get_secret_value()))
    if settings.alert_slack_webhook_url:
        found.append(slack(settings.alert_slack_webhook_url.get_secret_value()))
    if settings.alert_smtp_host and settings.alert_email_to:
        found.append(Email(settings))
    return found
