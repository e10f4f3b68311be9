"""``python -m tradebot.backfill.polygon_aggregates``: the Polygon backfill with the settings.

The same as ``tradebot backfill polygon``; the source is providers/polygon.py.
"""

from __future__ import annotations

import sys

from tradebot.backfill.cli import backfill_command
from tradebot.backfill.runner import BackfillOptions
from tradebot.providers.polygon import PolygonBars

if __name__ == "__main__":
    sys.exit(backfill_command(PolygonBars, BackfillOptions()))
