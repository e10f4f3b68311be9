"""``python -m tradebot.bench bus``: bus throughput on the embedded Redis (or REDIS_URL)."""

from __future__ import annotations

import asyncio
import sys

from tradebot.bench.bus import bench_bus
from tradebot.common.config import load_settings
from tradebot.common.runtime import infrastructure


def main() -> None:
    if sys.argv[1:] not in ([], ["bus"]):
        raise SystemExit("usage: python -m tradebot.bench [bus]")
    with infrastructure(load_settings()) as settings:
        rows = asyncio.run(bench_bus(settings.redis_url or ""))
    print(f"{'batch':>6} {'publish msgs/s':>15} {'consume+ack msgs/s':>19}")
    for row in rows:
        print(f"{row['batch']:>6.0f} {row['publish_per_s']:>15,.0f} {row['consume_ack_per_s']:>19,.0f}")


if __name__ == "__main__":
    main()
