"""``python -m tradebot.market_data.alpaca_service``: the Alpaca live feed worker.

Trades, minute bars and their late corrections onto the bus. The stream client, history and
conversions are in providers/alpaca.py; the runner (gap repair included) is live_feed.py.
"""

from __future__ import annotations

from functools import partial

from tradebot.common import runtime
from tradebot.common.streams import Role
from tradebot.market_data.live_feed import worker
from tradebot.providers.alpaca import LIVE

run = worker(LIVE)
main = partial(runtime.main, Role.ALPACA, run)

if __name__ == "__main__":
    main()
