"""``python -m tradebot.backfill.alpaca_historical``: the Alpaca backfill with the settings.

The same as ``tradebot backfill alpaca``; the source is providers/alpaca.py.
"""

from __future__ import annotations

import sys

from tradebot.backfill.cli import backfill_command
from tradebot.backfill.runner import BackfillOptions
from tradebot.providers.alpaca import AlpacaBars

if __name__ == "__main__":
    sys.exit(backfill_command(AlpacaBars, BackfillOptions()))
