"""The live fan-out's pieces without a network: what a read becomes, and a client's bound and frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tradebot.common.bus.wire import encode, encode_entries
from tradebot.common.codec import encode_event
from tradebot.common.models import OrderEvent, Signal, Tick
from tradebot.ui.live import CHUNK_MESSAGES, FRAME_MESSAGES, Hub, MinuteBar, Subscriber, batch_messages

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def tick(symbol: str, price: float, seconds: float, size: float = 1) -> Tick:
    return Tick.create(symbol, price, size, START + timedelta(seconds=seconds), trade_id=int(seconds * 1000))


def data_of(messages: list[tuple[str, str | None, str]], channel: str) -> list[dict]:
    return [json.loads(text)["data"] for c, _, text in messages if c == channel]


def test_a_read_is_its_ticks_in_order_then_each_moved_bar_once_in_its_last_state() -> None:
    read = [tick("AAPL", 100, 1), tick("MSFT", 50, 2), tick("AAPL", 101, 3, size=2), tick("AAPL", 99, 4)]
    messages = batch_messages([encode(t) for t in read], {})
    assert [json.loads(text)["data"]["id"] for c, _, text in messages if c == "ticks"] == [t.id for t in read]
    assert data_of(messages, "ticks")[0] == json.loads(read[0].model_dump_json())  # the tick as pydantic writes it
    bars = {json.loads(text)["symbol"]: json.loads(text)["data"] for c, _, text in messages if c == "bars"}
    minute = int(START.timestamp())
    assert bars == {
        "AAPL": {"time": minute, "open": 100, "high": 101, "low": 99, "close": 99, "volume": 4},
        "MSFT": {"time": minute, "open": 50, "high": 50, "low": 50, "close": 50, "volume": 1},
    }
    assert [c for c, _, _ in messages][-2:] == ["bars", "bars"]


def test_a_new_minute_in_a_read_sends_the_closed_bar_in_its_final_state_first() -> None:
    bars: dict[str, MinuteBar] = {}
    messages = batch_messages(
        [encode(t) for t in (tick("AAPL", 100, 50), tick("AAPL", 102, 55), tick("AAPL", 90, 61))], bars
    )
    closes = [(b["time"], b["close"]) for b in data_of(messages, "bars")]
    minute = int(START.timestamp())
    assert closes == [(minute, 102), (minute + 60, 90)]
    # a late tick of the closed minute moves no candle, in a later read too
    later = batch_messages([encode(tick("AAPL", 500, 59))], bars)
    assert data_of(later, "bars") == []
    assert bars["AAPL"].close == 90


def test_a_malformed_entry_is_skipped_and_the_rest_of_the_read_goes_out() -> None:
    good = tick("AAPL", 100, 1)
    bad = {"v": "1", "type": "Tick", "data": '{"id": "x", "symbol": "lower", "price": -1}'}
    messages = batch_messages([bad, {"v": "9", "type": "Tick", "data": "{}"}, encode(good)], {})
    assert [json.loads(t)["data"]["id"] for c, _, t in messages if c == "ticks"] == [good.id]


def test_tick_batches_and_entries_of_version_1_go_out_alike_and_a_bad_tick_alone_is_skipped() -> None:
    read = [tick("AAPL", 100, 1), tick("MSFT", 50, 2), tick("AAPL", 101, 3)]
    [(_, batch)] = encode_entries(("s", t) for t in read)
    old = {"v": "1", "type": "Tick", "data": encode_event(read[0])}
    assert batch_messages([batch], {}) == batch_messages([old, *(encode(t) for t in read[1:])], {})
    assert data_of(batch_messages([batch], {}), "ticks") == [json.loads(t.model_dump_json()) for t in read]
    rows = json.loads(batch["data"])
    rows[1][3] = -1
    messages = batch_messages([{**batch, "data": json.dumps(rows)}], {})
    assert [json.loads(t)["data"]["id"] for c, _, t in messages if c == "ticks"] == [read[0].id, read[2].id]


def order_event(n: int, status: str) -> OrderEvent:
    return OrderEvent(
        id=f"ev-{n}",
        symbol="AAPL",
        timestamp=START,
        client_order_id=f"co-{n}",
        status=status,  # type: ignore[arg-type]
        side="buy",
        quantity=10,
        price=187.25 if status == "filled" else None,
        reason=None if status == "filled" else "insufficient cash",
    )


def test_other_events_go_to_their_channel_and_only_to_a_channel_someone_listens_to() -> None:
    signal = Signal(
        id="s", symbol="AAPL", timestamp=START, side="buy", price=1.0, confidence=0.5, strategy="x", tick_id="t"
    )
    read = [encode(e) for e in (signal, order_event(1, "filled"), order_event(2, "rejected"), tick("AAPL", 100, 1))]

    def ids(channels: set[str]) -> list[tuple[str, str]]:
        messages = batch_messages(read, {}, channels)
        return [(c, json.loads(t)["data"]["id"]) for c, _, t in messages if c in channels and c != "ticks"]

    assert ids({"signals"}) == [("signals", "s")]
    assert ids({"fills"}) == [("fills", "ev-1")]
    assert ids({"orders"}) == [("orders", "ev-2")]
    assert ids({"ticks"}) == []
    assert ids({"signals", "fills", "orders"}) == [("signals", "s"), ("fills", "ev-1"), ("orders", "ev-2")]


def subscribed(hub: Hub, channels: set[str], symbols: set[str]) -> Subscriber:
    subscriber = hub.subscribe()
    subscriber.channels, subscriber.symbols = channels, symbols
    return subscriber


def frames(subscriber: Subscriber) -> list[list[dict]]:
    sent = []
    while (frame := subscriber.next_frame()) is not None:
        sent.append(json.loads(frame))
    return sent


def test_clients_get_what_they_subscribed_to_in_frames_of_at_most_the_frame_limit() -> None:
    hub = Hub(None, 8, queue_size=10_000)  # no bus: fan_out only
    everything = subscribed(hub, {"ticks"}, {"*"})
    msft = subscribed(hub, {"ticks"}, {"MSFT"})
    read = [tick("AAPL" if i % 3 else "MSFT", 100, i / 100) for i in range(2 * FRAME_MESSAGES + 7)]
    hub.fan_out(batch_messages([encode(t) for t in read], {}))
    got = frames(everything)
    assert [e["data"]["id"] for frame in got for e in frame] == [t.id for t in read]
    assert all(len(frame) <= FRAME_MESSAGES for frame in got)
    assert len(got) == 3
    assert [e["data"]["id"] for frame in frames(msft) for e in frame] == [t.id for t in read if t.symbol == "MSFT"]
    assert hub.delivered == len(read) + sum(t.symbol == "MSFT" for t in read)


def test_one_read_is_always_taken_but_a_client_still_behind_its_bound_is_dropped() -> None:
    hub = Hub(None, 8, queue_size=CHUNK_MESSAGES)
    client = subscribed(hub, {"ticks"}, {"*"})
    burst = [encode(tick("AAPL", 100, i / 1000)) for i in range(3 * CHUNK_MESSAGES)]  # a read over the bound
    hub.fan_out(batch_messages(burst, {}))
    assert not client.slow
    assert client.pending == 3 * CHUNK_MESSAGES
    frames(client)  # it keeps up: the next read is taken too
    hub.fan_out(batch_messages(burst, {}))
    assert not client.slow
    hub.fan_out(batch_messages(burst, {}))  # it did not send the last read on: dropped
    assert client.slow
    assert client.dropped.is_set()
    assert hub.dropped == 1
    hub.fan_out(batch_messages(burst, {}))
    assert hub.dropped == 1  # counted once


def test_a_reply_goes_out_before_waiting_events() -> None:
    hub = Hub(None, 8)
    client = subscribed(hub, {"ticks"}, {"*"})
    hub.fan_out(batch_messages([encode(tick("AAPL", 100, 1))], {}))
    client.reply('{"type":"subscribed"}')
    assert json.loads(client.next_frame() or "") == {"type": "subscribed"}
    assert isinstance(json.loads(client.next_frame() or ""), list)
    assert client.next_frame() is None
    assert not client.ready.is_set()


async def test_a_health_snapshot_is_taken_only_for_clients_that_listen_to_health() -> None:
    hub = Hub(None, 8)
    taken = []

    async def snapshot() -> dict:
        taken.append(1)
        return {"workers": {}}

    ticks_only = subscribed(hub, {"ticks"}, {"*"})
    assert not await hub.publish_health(snapshot)
    assert taken == []
    assert ticks_only.next_frame() is None
    watcher = subscribed(hub, {"health"}, {"*"})
    assert await hub.publish_health(snapshot)
    assert taken == [1]
    [message] = json.loads(watcher.next_frame() or "")
    assert message["channel"] == "health"
    assert message["data"]["workers"] == {}
    assert ticks_only.next_frame() is None
