"""Alpaca's ``trade_updates`` through alpaca-py's TradingStream, with our own reconnect backoff.

TradingStream's ``run()`` owns its event loop and reconnects on its own schedule without telling
anyone it is down. Here one connection is one ``_start_ws`` + ``_consume`` (its connect, auth,
listen and read steps) on our loop; between connections we back off (capped, jittered) and the
worker polls open orders over REST, because Alpaca does not replay updates missed while away.
"""

from __future__ import annotations

import asyncio
import logging

from alpaca.trading.models import TradeUpdate
from alpaca.trading.stream import TradingStream

from tradebot.broker.alpaca import broker_order
from tradebot.broker.base import BrokerFill, BrokerOrder
from tradebot.common.config import Settings
from tradebot.common.lifecycle import Backoff

log = logging.getLogger(__name__)
Update = tuple[BrokerOrder, BrokerFill | None]


def as_update(update: TradeUpdate) -> Update:
    """The order as the update shows it, and the execution when it is a fill."""
    seen = broker_order(update.order)
    fill = None
    if update.qty is not None and update.price is not None and update.event in ("fill", "partial_fill"):
        fill = BrokerFill(seen.broker_id, float(update.qty), float(update.price), seen.filled_quantity)
    return seen, fill


class TradeUpdates:
    """Runs until stopped; ``connected`` is set while updates flow, and ``queue`` receives them."""

    def __init__(self, settings: Settings, *, paper: bool):
        assert settings.alpaca_key is not None
        assert settings.alpaca_secret is not None
        self.settings, self.paper = settings, paper
        self.queue: asyncio.Queue[Update] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._arrived = asyncio.Event()
        self._backoff = Backoff("alpaca trade_updates")

    def _new_stream(self) -> TradingStream:
        assert self.settings.alpaca_key is not None
        assert self.settings.alpaca_secret is not None
        stream = TradingStream(
            self.settings.alpaca_key.get_secret_value(),
            self.settings.alpaca_secret.get_secret_value(),
            paper=self.paper,
            url_override=self.settings.alpaca_trading_stream_url,  # type: ignore[arg-type]
        )
        stream.subscribe_trade_updates(self._on_update)
        return stream

    async def _on_update(self, update: TradeUpdate) -> None:
        self.queue.put_nowait(as_update(update))
        self._arrived.set()

    async def arrived(self) -> None:
        """Return once an update is waiting in the queue (or the connection came up)."""
        if self.queue.empty():
            self._arrived.clear()
            await self._arrived.wait()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            stream = self._new_stream()
            try:
                # alpaca-py's TradingStream has no public hook to run inside our loop with our own
                # reconnect backoff; these privates are pinned with alpaca-py==0.44.0 (requirements.txt)
                await stream._start_ws()  # type: ignore[no-untyped-call]
                self.connected.set()
                self._arrived.set()  # the worker catches up on what it missed while away
                self._backoff.succeeded()
                consuming = asyncio.create_task(stream._consume())  # type: ignore[no-untyped-call]
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({consuming, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not consuming.done():
                    consuming.cancel()
                await asyncio.gather(consuming, return_exceptions=True)
                if consuming.done() and not consuming.cancelled() and consuming.exception():
                    raise consuming.exception()  # type: ignore[misc]
            except Exception as error:  # noqa: BLE001 - any failure of the connection: back off, go again
                self.connected.clear()
                self.reconnects += 1
                await stream.close()
                await self._backoff.wait(error, stop)
                continue
            finally:
                self.connected.clear()
            await stream.close()
