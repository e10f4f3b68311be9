"""Sends alerts: de-duplicated per incident, rate-limited per channel, retried with backoff.

A channel that stays down does not hold the pipeline: after ALERT_RETRIES attempts the alert is
logged as undelivered and counted. Over ALERT_RATE_PER_MINUTE a channel's alerts are held back and
counted, and the next message that goes out says how many were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence

from tradebot.alerts.channels import Channel, ChannelError
from tradebot.alerts.rules import Alert, Deduper
from tradebot.common.ratelimit import TokenBucket

log = logging.getLogger(__name__)
RETRIES = 3
FIRST_RETRY_S = 0.5


class Notifier:
    """Fans one alert out to every channel once per incident (plus reminders)."""

    def __init__(
        self, channels: Sequence[Channel], deduper: Deduper, *, per_minute: int, counters: Counter[str]
    ) -> None:
        self.channels = list(channels)
        self.deduper = deduper
        self.counters = counters
        self._allowance = {channel.name: TokenBucket(per_minute, burst=per_minute) for channel in self.channels}
        self._held_back = Counter[str]()

    async def notify(self, alert: Alert, *, rate_limited: bool = True) -> None:
        """Send ``alert`` unless its incident was alerted within the reminder period; one that is not
        ``rate_limited`` (the daily summary: once a day) is never held back."""
        text = self.deduper.due(alert)
        if text is None:
            self.counters["alerts_deduplicated"] += 1
            return
        log.log(logging.WARNING if alert.severity != "info" else logging.INFO, "alert: %s", text)
        await asyncio.gather(*(self._deliver(channel, text, rate_limited) for channel in self.channels))

    async def resolve(self, key: str, text: str) -> None:
        """An incident ended: say so where it was alerted."""
        if self.deduper.resolve(key):
            await self.notify(Alert(f"resolved:{key}:{time.monotonic()}", text))

    async def _deliver(self, channel: Channel, text: str, rate_limited: bool) -> None:
        if rate_limited and self._allowance[channel.name].try_take() > 0:
            self._held_back[channel.name] += 1
            self.counters["alerts_rate_limited"] += 1
            return
        held = self._held_back.pop(channel.name, 0)
        message = f"{text} (+{held} more held back by ALERT_RATE_PER_MINUTE)" if held else text
        for attempt in range(RETRIES):
            try:
                await channel.send(message)
                self.counters[f"alerts_sent_{channel.name}"] += 1
                return
            except ChannelError as error:
                if attempt + 1 == RETRIES:
                    log.error("alert not delivered after %d attempts: %s", RETRIES, error)
                    self.counters["alerts_undelivered"] += 1
                    return
                await asyncio.sleep(FIRST_RETRY_S * 2**attempt)  # backoff before the retry
