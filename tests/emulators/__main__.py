"""Run one emulator by hand: `python -m tests.emulators alpaca-stream --port 8765` (Ctrl-C stops).

Stream emulators play a demo: a random walk of trades for the symbols, plus a bar every ten ticks,
until interrupted. REST emulators serve synthetic bars for the last few days.
"""

from __future__ import annotations

import argparse
import random
import threading
from datetime import timedelta

from .alpaca_rest import AlpacaRestEmulator
from .alpaca_stream import AlpacaStreamEmulator
from .alpaca_trading import AlpacaTradingEmulator
from .events import Bar, BarDataset, Trade, utc_now
from .polygon_rest import PolygonRestEmulator
from .polygon_stream import PolygonStreamEmulator
from .ws_base import WebSocketEmulator


def stream_demo(emulator: WebSocketEmulator, symbols: list[str], interval: float) -> None:
    """Push random-walk trades (and a bar every ten ticks) until Ctrl-C."""
    rng = random.Random(42)
    prices = {symbol: 100.0 + 50 * index for index, symbol in enumerate(symbols)}
    ticks: dict[str, list[Trade]] = {symbol: [] for symbol in symbols}
    pacing = threading.Event()  # never set: wait() is just an interruptible pause between ticks
    with emulator:
        print(f"{type(emulator).__name__} on {emulator.url}; Ctrl-C to stop")
        try:
            while True:
                for symbol in symbols:
                    prices[symbol] = round(prices[symbol] * (1 + rng.gauss(0, 0.001)), 2)
                    trade = Trade(symbol, prices[symbol], rng.randint(1, 500))
                    ticks[symbol].append(trade)
                    emulator.push_trade(trade)
                    if len(ticks[symbol]) == 10:
                        window, ticks[symbol] = ticks[symbol], []
                        emulator.push_bar(
                            Bar(
                                symbol,
                                window[0].timestamp.replace(second=0, microsecond=0),
                                window[0].price,
                                max(t.price for t in window),
                                min(t.price for t in window),
                                window[-1].price,
                                sum(t.size for t in window),
                                len(window),
                            )
                        )
                pacing.wait(interval)
        except KeyboardInterrupt:
            print("bye")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators", description=__doc__)
    parser.add_argument(
        "emulator", choices=["alpaca-stream", "polygon-stream", "alpaca-rest", "polygon-rest", "alpaca-trading"]
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on, e.g. the compose network's gateway for containers"
    )
    parser.add_argument("--key", default="test-key", help="API key (Alpaca key id / Polygon key)")
    parser.add_argument("--secret", default="test-secret", help="Alpaca secret key")
    parser.add_argument("--symbols", default="AAPL,MSFT", help="comma-separated symbols")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between demo ticks")
    parser.add_argument("--days", type=int, default=5, help="REST: days of synthetic bars up to now")
    parser.add_argument("--page-size", type=int, default=1000, help="REST: bars per page")
    args = parser.parse_args()
    symbols = [symbol for symbol in args.symbols.split(",") if symbol]

    if args.emulator == "alpaca-stream":
        # No connection limit by hand: a restarted client may race its own previous connection.
        stream_demo(
            AlpacaStreamEmulator(
                key=args.key, secret=args.secret, host=args.host, port=args.port, max_connections=None
            ),
            symbols,
            args.interval,
        )
        return
    if args.emulator == "alpaca-trading":
        with AlpacaTradingEmulator(key=args.key, secret=args.secret) as trading:
            print(f"ALPACA_TRADING_URL={trading.url} ALPACA_TRADING_STREAM_URL={trading.stream_url}; Ctrl-C to stop")
            try:
                trading.book.wait_until(lambda: False, timeout=10**9, what="Ctrl-C")
            except KeyboardInterrupt:
                print("bye")
        return
    if args.emulator == "polygon-stream":
        stream_demo(PolygonStreamEmulator(api_key=args.key, host=args.host, port=args.port), symbols, args.interval)
        return
    dataset = BarDataset.generate(symbols, utc_now() - timedelta(days=args.days), utc_now())
    if args.emulator == "alpaca-rest":
        rest = AlpacaRestEmulator(
            dataset, key=args.key, secret=args.secret, page_size=args.page_size, host=args.host, port=args.port
        )
    else:
        rest = PolygonRestEmulator(dataset, api_key=args.key, page_size=args.page_size, host=args.host, port=args.port)
    rest.serve_forever()


if __name__ == "__main__":
    main()
