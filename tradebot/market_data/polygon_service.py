"""``python -m tradebot.market_data.polygon_service``: the Polygon live feed worker.

Trades (``T``) and minute aggregates (``AM``) onto the bus: the client is in providers/polygon.py,
the runner (with gap repair) in live_feed.py.
"""

from __future__ import annotations

from functools import partial

from tradebot.common import runtime
from tradebot.common.streams import Role
from tradebot.market_data.live_feed import worker
from tradebot.providers.polygon import LIVE

run = worker(LIVE)
main = partial(runtime.main, Role.POLYGON, run)

if __name__ == "__main__":
    main()
