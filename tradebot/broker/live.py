"""Paper or live: live trading must be asked for twice, and says so loudly when it is."""

from __future__ import annotations

import logging

from tradebot.common.config import Settings, SettingsError

log = logging.getLogger(__name__)

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
LIVE_CONFIRMATION = "I-UNDERSTAND-THIS-TRADES-REAL-MONEY"


def alpaca_is_paper(settings: Settings) -> bool:
    """True for the paper endpoint; live only with ALPACA_PAPER=false AND the confirmation phrase.

    Raises SettingsError (one line, exit 78) for missing keys or a half-given live opt-in.
    """
    if settings.alpaca_key is None or settings.alpaca_secret is None:
        raise SettingsError("EXECUTION_BROKER=alpaca needs ALPACA_KEY and ALPACA_SECRET; set both (paper keys first)")
    confirmed = settings.alpaca_live_confirm == LIVE_CONFIRMATION
    if settings.alpaca_paper:
        if settings.alpaca_live_confirm is not None:
            log.warning("ALPACA_LIVE_CONFIRM is set but ALPACA_PAPER is true: trading on the PAPER endpoint")
        return True
    if not confirmed:
        raise SettingsError(
            "ALPACA_PAPER=false asks for LIVE trading with real money; confirm it with "
            f"ALPACA_LIVE_CONFIRM={LIVE_CONFIRMATION} or set ALPACA_PAPER=true"
        )
    return False


def announce(settings: Settings, paper: bool) -> None:
    """The start line: which endpoint, in capitals when money is real (keys are never shown)."""
    url = settings.alpaca_trading_url or (PAPER_TRADING_URL if paper else LIVE_TRADING_URL)
    if paper:
        log.info("execution broker: Alpaca PAPER trading at %s", url)
    else:
        log.warning("!!! execution broker: Alpaca LIVE TRADING WITH REAL MONEY at %s !!!", url)
