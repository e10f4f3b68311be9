"""``python -m tradebot.bench [SECTION ...] [--quick]``: the same as ``tradebot bench``."""

from tradebot.bench.cli import app

if __name__ == "__main__":
    app()
