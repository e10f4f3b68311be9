"""The alpaca-py internals AlpacaStream overrides are still what it was written against.

alpaca-py offers no public hook for running its stream inside our event loop, for the auth error
code or for undecodable frames (see providers/alpaca.py), so the override relies on private
methods of the pinned version. These checks fail on an upgrade that moves any of them, before a
live feed silently stops stopping on bad keys.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from alpaca.data.live import StockDataStream

from tradebot.providers.alpaca import AlpacaStream

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
OVERRIDDEN = ("_auth", "_start_ws", "_consume")


def test_alpaca_py_is_pinned_to_the_version_the_override_was_written_for() -> None:
    pins = re.findall(r"^alpaca-py==(\S+)$", REQUIREMENTS.read_text(), flags=re.M)
    assert pins == [version("alpaca-py")]


@pytest.mark.parametrize("name", [*OVERRIDDEN, "_connect", "_run_forever"])
def test_the_private_methods_exist_as_coroutines_without_arguments(name: str) -> None:
    method = getattr(StockDataStream, name)
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters) == ["self"]


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_alpaca_stream_overrides_each_one(name: str) -> None:
    assert getattr(AlpacaStream, name) is not getattr(StockDataStream, name)


def test_the_receive_loop_still_goes_through_the_overridden_methods() -> None:
    loop = inspect.getsource(StockDataStream._run_forever)
    assert "await self._start_ws()" in loop
    assert "await self._consume()" in loop
    assert "await self._connect()" in inspect.getsource(StockDataStream._start_ws)


def test_the_attributes_the_override_reads_are_set_by_the_constructor() -> None:
    stream = StockDataStream("key", "secret", raw_data=True, url_override="ws://127.0.0.1:1")
    assert {"_ws", "_endpoint", "_api_key", "_secret_key"} <= vars(stream).keys()
    assert stream._ws is None
