"""Prove the provider emulators against the real client libraries (alpaca-py, polygon-api-client).

Everything waits on conditions (events, the emulators' `wait_for_*`), never on sleeps; every wait
is bounded. The only real delays are alpaca-py's own reconnect backoff (0.5-1 s) where a test
reconnects on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgpack
import pytest
import urllib3
from alpaca.common.exceptions import APIError
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass, AssetStatus
from alpaca.trading.requests import GetAssetsRequest
from polygon import RESTClient, WebSocketClient
from polygon.exceptions import AuthError, BadResponse
from polygon.websocket.models import EquityAgg, EquityTrade, Market
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.emulators import (
    AlpacaRestEmulator,
    AlpacaStreamEmulator,
    Bar,
    BarDataset,
    Close,
    Drop,
    Gate,
    PolygonRestEmulator,
    PolygonStreamEmulator,
    RejectAuth,
    Send,
    SendError,
    SendMessages,
    SendRaw,
    Trade,
    make_asset,
)

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
KEY, SECRET = "test-key", "test-secret"
TIMEOUT = 30.0  # bounds a hang only: a loaded 2-core machine can be 5x slower


class Inbox:
    """Collects what a client handler receives; tests wait for a count, never sleep."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._condition = threading.Condition()

    async def add(self, item: Any) -> None:
        with self._condition:
            self.items.append(item)
            self._condition.notify_all()

    async def extend(self, items: list[Any]) -> None:
        for item in items:
            await self.add(item)

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        with self._condition:
            assert self._condition.wait_for(lambda: len(self.items) >= count, timeout), self.items
            return list(self.items)


class LogWatcher(logging.Handler):
    """Sets `seen` when a log record contains `needle`."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle, self.seen = needle, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@contextlib.contextmanager
def running(stream: StockDataStream, emu: AlpacaStreamEmulator) -> Iterator[threading.Thread]:
    """Run `stream.run()` in a thread; on exit stop it and wait for the thread."""
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        if thread.is_alive():
            stream.stop()
            # The stream only checks its stop flag after a frame or a 5 s receive timeout;
            # dropping the connection wakes it at once.
            emu.drop()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def alpaca_stream(emu: AlpacaStreamEmulator, inbox: Inbox, secret: str = SECRET) -> StockDataStream:
    stream = StockDataStream(KEY, secret, url_override=emu.url)
    stream.subscribe_trades(inbox.add, "AAPL")
    stream.subscribe_bars(inbox.add, "AAPL")
    return stream


# ----- Alpaca stream ------------------------------------------------------------------------------


def test_alpaca_stream_delivers_trades_and_bars_to_alpaca_py() -> None:
    trade = Trade("AAPL", 190.25, 15, T0, id=42, conditions=("@", "I"))
    bar = Bar("AAPL", T0, 190.0, 191.0, 189.5, 190.5, 12_000, trade_count=87, vwap=190.3)
    other = Trade("MSFT", 370.0, 1, T0)  # not subscribed: the emulator must filter it out
    inbox = Inbox()
    with (
        AlpacaStreamEmulator([Send([trade, other, bar])]) as emu,
        running(alpaca_stream(emu, inbox), emu),
    ):
        got_trade, got_bar = inbox.wait_for(2)
        session = emu.sessions[0]

    t, b = got_trade, got_bar
    assert (t.symbol, t.price, t.size, t.id, t.timestamp) == ("AAPL", 190.25, 15, 42, T0)
    assert (t.exchange, t.conditions, t.tape) == ("V", ["@", "I"], "C")
    assert (b.open, b.high, b.low, b.close, b.volume) == (190.0, 191.0, 189.5, 190.5, 12_000)
    assert (b.timestamp, b.trade_count, b.vwap) == (T0, 87, 190.3)
    assert session.headers["Content-Type"] == "application/msgpack"
    assert session.received == [
        {"action": "auth", "key": KEY, "secret": SECRET},
        {"trades": ["AAPL"], "bars": ["AAPL"], "action": "subscribe"},
    ]


def test_alpaca_stream_reconnects_after_drop_and_gate_controls_the_timing() -> None:
    gate = Gate()
    as_dict = {"symbol": "AAPL", "price": 2.0, "size": 1, "timestamp": "2024-01-02T14:30:00Z"}
    scenario = [Trade("AAPL", 1.0, 1, T0), gate, Drop(), as_dict]
    inbox = Inbox()
    with AlpacaStreamEmulator(scenario) as emu, running(alpaca_stream(emu, inbox), emu):
        inbox.wait_for(1)
        assert emu.connections == 1
        assert emu.steps_remaining == 3
        gate.open()
        emu.wait_for_scenario(TIMEOUT)
        emu.wait_for_subscription(["AAPL"], "bars", timeout=TIMEOUT)
        assert emu.push_trade(symbol="AAPL", price=3.0, timestamp=T0) == 1
        prices = [trade.price for trade in inbox.wait_for(3)]

    assert prices == [1.0, 2.0, 3.0]
    assert emu.connections == 2
    assert emu.sessions[1].received == emu.sessions[0].received  # re-auth and full re-subscribe


def test_alpaca_stream_survives_malformed_frames() -> None:
    bad_type = {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": "not-a-price", "s": 1, "t": T0}
    bar_without_n_vw = {"T": "b", "S": "AAPL", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "t": T0}
    string_time = {"T": "t", "S": "AAPL", "i": 2, "p": 1.0, "s": 1, "t": "2024-01-02T14:30:00Z"}
    scenario = [
        SendRaw(b"\xc1\xc1garbage"),
        SendRaw("text, not msgpack"),
        SendError(500),
        SendMessages([bad_type]),
        SendMessages([bar_without_n_vw]),
        SendMessages([string_time]),
        Trade("AAPL", 5.0, 1, T0),
    ]
    inbox = Inbox()
    with AlpacaStreamEmulator(scenario) as emu, running(alpaca_stream(emu, inbox), emu):
        (only,) = inbox.wait_for(1)
    assert only.price == 5.0
    assert emu.connections == 1  # alpaca-py logs each failure and keeps the connection


def test_alpaca_stream_bad_credentials_are_only_logged_by_alpaca_py() -> None:
    watcher = LogWatcher("auth failed")
    logger = logging.getLogger("alpaca.data.live.websocket")
    logger.addHandler(watcher)
    try:
        with (
            AlpacaStreamEmulator() as emu,
            running(alpaca_stream(emu, Inbox(), secret="wrong"), emu),
        ):
            assert watcher.seen.wait(TIMEOUT)  # ValueError("auth failed"), caught and logged
            assert emu.auth_results[0] == "bad_credentials"
    finally:
        logger.removeHandler(watcher)


def test_alpaca_stream_insufficient_subscription_stops_alpaca_py() -> None:
    with AlpacaStreamEmulator([RejectAuth(409)], feed="sip") as emu:
        stream = alpaca_stream(emu, Inbox())
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        thread.join(TIMEOUT)  # run() returns by itself: 409 is the one error it gives up on
        assert not thread.is_alive()
        assert emu.auth_results == ["rejected:409"]


def _raw_alpaca(url: str, msgpack_mode: bool = True) -> Any:
    headers = {"Content-Type": "application/msgpack"} if msgpack_mode else {}
    return ws_connect(url, additional_headers=headers, open_timeout=TIMEOUT)


def _exchange(ws: Any, message: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    if message is not None:
        ws.send(msgpack.packb(message))
    return msgpack.unpackb(ws.recv(timeout=TIMEOUT))


def test_alpaca_stream_protocol_errors_and_connection_limit() -> None:
    auth = {"action": "auth", "key": KEY, "secret": SECRET}
    with (
        AlpacaStreamEmulator() as emu,
        _raw_alpaca(emu.url) as first,
        _raw_alpaca(emu.url_for("sip")) as second,
    ):
        assert _exchange(first) == [{"T": "success", "msg": "connected"}]
        assert _exchange(first, {"action": "subscribe", "trades": ["AAPL"]})[0]["code"] == 401
        assert _exchange(first, auth) == [{"T": "success", "msg": "authenticated"}]
        assert _exchange(first, auth)[0]["code"] == 403
        first.send(b"\xc1")
        assert _exchange(first)[0] == {"T": "error", "code": 400, "msg": "invalid syntax"}
        reply = _exchange(first, {"action": "subscribe", "trades": ["AAPL"], "bars": ["*"]})[0]
        assert (reply["T"], reply["trades"], reply["bars"], reply["corrections"]) == (
            "subscription",
            ["AAPL"],
            ["*"],
            ["AAPL"],
        )
        _exchange(second)
        assert _exchange(second, auth) == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
        assert emu.auth_results == ["ok", "connection_limit"]


def test_alpaca_stream_json_mode_and_paths() -> None:
    with (
        AlpacaStreamEmulator() as emu,
        _raw_alpaca(emu.url_for("delayed_sip"), msgpack_mode=False) as ws,
    ):
        ws.recv(timeout=TIMEOUT)
        ws.send(json.dumps({"action": "auth", "key": KEY, "secret": SECRET}))
        ws.recv(timeout=TIMEOUT)
        ws.send(json.dumps({"action": "subscribe", "trades": ["AAPL"]}))
        ws.recv(timeout=TIMEOUT)
        emu.push_trade(Trade("AAPL", 1.5, 2, T0, id=9))
        frame = ws.recv(timeout=TIMEOUT)
        assert isinstance(frame, str)  # JSON clients get text frames with RFC-3339 times
        assert json.loads(frame)[0]["t"] == "2024-01-02T14:30:00Z"
        with pytest.raises(InvalidStatus):
            ws_connect(emu.url.replace("/v2/iex", "/v2/bogus"), open_timeout=TIMEOUT)


# ----- Polygon stream ------------------------------------------------------------------------------


def polygon_client(emu: PolygonStreamEmulator, api_key: str = KEY) -> WebSocketClient:
    return WebSocketClient(
        api_key=api_key,
        feed=emu.host_port,
        market=Market.Stocks,
        secure=False,
        subscriptions=["T.AAPL", "AM.AAPL"],
    )


@pytest.mark.asyncio
async def test_polygon_stream_delivers_trades_and_aggregates_then_ends_on_close_1000() -> None:
    trade = Trade("AAPL", 190.25, 15, T0, id=42)
    bar = Bar("AAPL", T0, 190.0, 191.0, 189.5, 190.5, 12_000, trade_count=80, vwap=190.3)
    inbox = Inbox()
    with PolygonStreamEmulator([Send([trade, Trade("MSFT", 1.0), bar]), Close(1000)]) as emu:
        # connect() returns by itself on the 1000 close.
        await asyncio.wait_for(polygon_client(emu).connect(inbox.extend), TIMEOUT)
        subscribe = emu.received[1]

    t, a = inbox.items
    assert isinstance(t, EquityTrade)
    assert isinstance(a, EquityAgg)
    assert (t.symbol, t.price, t.size, t.id) == ("AAPL", 190.25, 15, "42")
    assert (t.timestamp, t.exchange, t.tape) == (1704205800000, 4, 3)
    assert (a.event_type, a.open, a.close, a.volume, a.vwap) == ("AM", 190.0, 190.5, 12_000, 190.3)
    assert (a.start_timestamp, a.end_timestamp, a.average_size) == (
        1704205800000,
        1704205860000,
        150,
    )
    assert subscribe["action"] == "subscribe"
    assert set(subscribe["params"].split(",")) == {"T.AAPL", "AM.AAPL"}


@pytest.mark.asyncio
async def test_polygon_stream_reconnects_after_drop() -> None:
    scenario = [Trade("AAPL", 1.0, 1, T0), Drop(), Trade("AAPL", 2.0, 1, T0), Close(1000)]
    inbox = Inbox()
    with PolygonStreamEmulator(scenario) as emu:
        await asyncio.wait_for(polygon_client(emu).connect(inbox.extend), TIMEOUT)
    assert [trade.price for trade in inbox.items] == [1.0, 2.0]
    assert emu.connections == 2


@pytest.mark.asyncio
async def test_polygon_stream_bad_key_raises_auth_error() -> None:
    with PolygonStreamEmulator() as emu:
        with pytest.raises(AuthError, match="authentication failed"):
            await asyncio.wait_for(polygon_client(emu, api_key="wrong").connect(Inbox().extend), TIMEOUT)
        assert emu.auth_results == ["bad_credentials"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("frame", "error"), [("not json", json.JSONDecodeError), ('[{"sym": "AAPL"}]', KeyError)])
async def test_polygon_stream_malformed_frames_escape_connect(frame: str, error: type[Exception]) -> None:
    # The client does not guard its parsing: code using it must.
    with PolygonStreamEmulator([SendRaw(frame)]) as emu, pytest.raises(error):
        await asyncio.wait_for(polygon_client(emu).connect(Inbox().extend), TIMEOUT)


# ----- Alpaca REST ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset() -> BarDataset:
    return BarDataset.generate(["AAPL", "MSFT"], "2024-01-02", "2024-01-06")


def test_generated_dataset_is_deterministic_and_consistent(dataset: BarDataset) -> None:
    again = BarDataset.generate(["AAPL", "MSFT"], "2024-01-02", "2024-01-06")
    assert dataset.bars("AAPL", "1Min") == again.bars("AAPL", "1Min")
    minutes, days = dataset.bars("AAPL", "1Min"), dataset.bars("AAPL", "1Day")
    assert len(minutes) == 4 * 390
    assert len(days) == 4
    assert days[0].open == minutes[0].open
    assert days[0].close == minutes[389].close
    assert days[0].timestamp == datetime(2024, 1, 2, 5, tzinfo=UTC)  # New York midnight


def test_alpaca_bars_follow_pagination(dataset: BarDataset) -> None:
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    end = datetime(2024, 1, 2, 15, 29, tzinfo=UTC)
    with AlpacaRestEmulator(dataset, page_size=7) as emu:
        client = StockHistoricalDataClient(KEY, SECRET, url_override=emu.url)
        minute = client.get_stock_bars(
            StockBarsRequest(symbol_or_symbols=["AAPL", "MSFT"], timeframe=TimeFrame.Minute, start=start, end=end)
        )
        hourly = client.get_stock_bars(
            StockBarsRequest(
                symbol_or_symbols="AAPL",
                start=start - timedelta(minutes=30),
                end=end,
                timeframe=TimeFrame(1, TimeFrameUnit.Hour),
            )
        )
        limited = client.get_stock_bars(
            StockBarsRequest(
                symbol_or_symbols="AAPL",
                timeframe=TimeFrame.Day,
                start=start - timedelta(days=1),
                limit=3,
            )
        )
        requests = emu.requests_to("/v2/stocks/bars")

    for symbol in ("AAPL", "MSFT"):
        expected = dataset.bars(symbol, "1Min", start, end)
        assert len(expected) == 60
        assert [(b.timestamp, b.close, b.trade_count) for b in minute.data[symbol]] == [
            (e.timestamp, e.close, e.trade_count) for e in expected
        ]
    assert [b.timestamp.hour for b in hourly.data["AAPL"]] == [14, 15]
    assert len(limited.data["AAPL"]) == 3
    # 120 minute bars make 18 pages of 7: 17 follow-ups carry a page_token.
    assert sum(1 for r in requests if "page_token" in r.query) == 17
    assert requests[0].query["timeframe"] == "1Min"
    assert requests[0].query["symbols"] == "AAPL,MSFT"


def test_alpaca_assets_parse_with_trading_client() -> None:
    assets = [
        make_asset("AAPL"),
        make_asset("SPY", exchange="ARCA", attributes=["fractional_eh_enabled"]),
        make_asset("OLD", status="inactive", tradable=False),
    ]
    with AlpacaRestEmulator(assets=assets) as emu:
        client = TradingClient(KEY, SECRET, url_override=emu.url)
        active = client.get_all_assets(GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY))
        everything = client.get_all_assets()
        spy = client.get_asset("SPY")
        assert emu.requests[0].query == {"status": "active", "asset_class": "us_equity"}

    assert [asset.symbol for asset in active] == ["AAPL", "SPY"]
    assert len(everything) == 3
    assert everything[2].tradable is False
    assert spy.exchange == "ARCA"
    assert str(spy.id) == assets[1]["id"]


def test_alpaca_rest_auth_and_injected_failures(dataset: BarDataset) -> None:
    request = StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Day, start=T0 - timedelta(days=1))
    with AlpacaRestEmulator(dataset) as emu:
        with pytest.raises(APIError) as bad_key:
            StockHistoricalDataClient(KEY, "wrong", url_override=emu.url).get_stock_bars(request)
        assert bad_key.value.status_code == 403
        assert httpx.get(f"{emu.url}/v2/assets").status_code == 401  # no credentials at all

        client = StockHistoricalDataClient(KEY, SECRET, url_override=emu.url)
        client._retry_wait = 0  # alpaca-py sleeps a fixed 3 s per 429 retry otherwise
        emu.fail_next(429, count=2)
        assert len(client.get_stock_bars(request).data["AAPL"]) == 4
        emu.fail_next(500, path_prefix="/v2/stocks")
        with pytest.raises(APIError) as server_error:
            client.get_stock_bars(request)
        assert (server_error.value.status_code, server_error.value.code) == (500, 50010000)
        assert [r.status for r in emu.requests_to("/v2/stocks")][-4:] == [429, 429, 200, 500]

        emu.fail_next(429)
        throttled = httpx.get(f"{emu.url}/v2/assets", headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET})
        assert throttled.status_code == 429
        assert throttled.headers["X-RateLimit-Remaining"] == "0"
        assert emu.failures_pending == 0


# ----- Polygon REST ------------------------------------------------------------------------------------


def test_polygon_list_aggs_follows_next_url(dataset: BarDataset) -> None:
    with PolygonRestEmulator(dataset, page_size=3) as emu:
        client = RESTClient(KEY, base=emu.url)
        days = list(client.list_aggs("AAPL", 1, "day", "2024-01-01", "2024-01-10"))
        start = datetime(2024, 1, 3, 14, 30, tzinfo=UTC)
        minutes = list(client.list_aggs("MSFT", 5, "minute", start, start + timedelta(minutes=59), sort="desc"))
        empty = client.get_aggs("AAPL", 1, "day", "2023-01-01", "2023-01-10")
        paths = [request.path for request in emu.requests]

    assert [(a.timestamp, a.close) for a in days] == [
        (int(b.timestamp.timestamp() * 1000), b.close) for b in dataset.bars("AAPL", "1Day")
    ]
    assert len(paths) == 2 + 4 + 1  # 4 days / 3 per page, 12 five-minute bars / 3, one empty
    assert [a.timestamp for a in minutes] == sorted((a.timestamp for a in minutes), reverse=True)
    assert len(minutes) == 12
    assert minutes[-1].timestamp == int(start.timestamp() * 1000)
    assert empty == []


def first_week_of_2024(client: RESTClient) -> list[Any]:
    return client.get_aggs("AAPL", 1, "day", "2024-01-01", "2024-01-10")


def test_polygon_rest_auth_and_429(dataset: BarDataset) -> None:
    with PolygonRestEmulator(dataset) as emu:
        with pytest.raises(BadResponse, match="Unknown API Key"):
            first_week_of_2024(RESTClient("wrong", base=emu.url))
        emu.fail_next(429, count=2)  # urllib3 retries these by itself (0 s, then 0.2 s backoff)
        assert len(first_week_of_2024(RESTClient(KEY, base=emu.url))) == 4
        emu.fail_next(429)
        with pytest.raises(urllib3.exceptions.MaxRetryError, match="429"):
            first_week_of_2024(RESTClient(KEY, base=emu.url, retries=0))
        assert [r.status for r in emu.requests] == [401, 429, 429, 200, 429]
