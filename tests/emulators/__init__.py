"""Local emulators of the Alpaca and Polygon wire protocols, for tests and manual runs.

Run one by hand with
`python -m tests.emulators {alpaca-stream,polygon-stream,alpaca-rest,polygon-rest,alpaca-trading}`.
"""

from .alpaca_rest import AlpacaRestEmulator, make_asset
from .alpaca_stream import AlpacaStreamEmulator
from .alpaca_trading import AlpacaTradingEmulator
from .events import Bar, BarDataset, Timeframe, Trade
from .http_base import Failure, RecordedRequest
from .polygon_rest import PolygonRestEmulator
from .polygon_stream import PolygonStreamEmulator
from .scenario import (
    Close,
    Drop,
    Gate,
    RejectAuth,
    Send,
    SendError,
    SendMessages,
    SendRaw,
)
from .ws_base import Session, Undecodable

__all__ = [
    "AlpacaRestEmulator",
    "AlpacaStreamEmulator",
    "AlpacaTradingEmulator",
    "Bar",
    "BarDataset",
    "Close",
    "Drop",
    "Failure",
    "Gate",
    "PolygonRestEmulator",
    "PolygonStreamEmulator",
    "RecordedRequest",
    "RejectAuth",
    "Send",
    "SendError",
    "SendMessages",
    "SendRaw",
    "Session",
    "Timeframe",
    "Trade",
    "Undecodable",
    "make_asset",
]
