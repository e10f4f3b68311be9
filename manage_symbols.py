"""Manage the symbol universe: `python manage_symbols.py --help` (also `tradebot symbols`)."""

from tradebot.universe.cli import app

if __name__ == "__main__":
    app()
