"""``tradebot dlq list|show|replay|drop``: look at dead letters, then replay or drop them.

Dead-letter streams (``dlq.<stream>``) are never trimmed: a record stays until it is replayed or
dropped here. ``replay`` re-publishes the entry, unchanged, to its original stream (so with the
same event id: storage, strategy and execution apply it at most once) and removes the record in
the same step; it waits while Redis is over REDIS_MEMORY_BUDGET_MB, like every producer that can.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from tradebot.common.bus import Bus
from tradebot.common.bus.dead_letters import DeadLetter
from tradebot.common.config import Settings, load_settings
from tradebot.common.runtime import infrastructure, setup_logging
from tradebot.common.streams import DEAD_LETTER_PREFIX, dead_letter_stream, retained_streams

T = TypeVar("T")
PAGE = 500

app = typer.Typer(help="Dead letters: list, show, replay, drop.", no_args_is_help=True, pretty_exceptions_enable=False)

Stream = Annotated[str, typer.Argument(help="a dead-letter stream (dlq.price.ticks:{0}) or the stream it belongs to")]
Ids = Annotated[list[str] | None, typer.Argument(help="record ids (from `show`); none: use --all")]
All = Annotated[bool, typer.Option("--all", help="every record of the stream")]


def dead_letters_of(stream: str) -> str:
    """``dlq.x`` for ``x`` or for ``dlq.x``."""
    return stream if stream.startswith(DEAD_LETTER_PREFIX) else dead_letter_stream(stream)


def _with_bus(work: Callable[[Bus, Settings], Awaitable[T]]) -> T:
    settings = load_settings()
    setup_logging(settings.log_level)
    with infrastructure(settings) as ready:

        async def run() -> T:
            bus = Bus.from_settings(ready)
            try:
                return await work(bus, ready)
            finally:
                await bus.close()

        return asyncio.run(run())


async def _selected(bus: Bus, dead_letters: str, ids: list[str] | None, every: bool) -> list[DeadLetter]:
    if not ids and not every:
        raise typer.BadParameter("name the record ids to act on, or pass --all")
    records, start = [], "-"
    while batch := await bus.dead_letters(dead_letters, start=start, count=PAGE):
        records += batch
        start = f"({batch[-1].record_id}"
    if every:
        return records
    wanted = set(ids or [])
    missing = wanted - {record.record_id for record in records}
    if missing:
        raise typer.BadParameter(f"no such record in {dead_letters}: {', '.join(sorted(missing))}")
    return [record for record in records if record.record_id in wanted]


@app.command(name="list")
def list_streams() -> None:
    """Every dead-letter stream and how many records it holds."""
    counts = _with_bus(lambda bus, _: bus.dead_letter_counts())
    if not counts:
        typer.echo("no dead letters")
    for stream, count in counts.items():
        typer.echo(f"{stream}\t{count}")


@app.command()
def show(
    stream: Stream, count: Annotated[int, typer.Option(min=1, help="records to show")] = 20, start: str = "-"
) -> None:
    """The records of one dead-letter stream: id, original entry, group, reason and payload."""
    dead_letters = dead_letters_of(stream)
    records = _with_bus(lambda bus, _: bus.dead_letters(dead_letters, start=start, count=count))
    for record in records:
        tick = "" if record.index is None else f" tick {record.index}"  # one tick of a tick-batch entry
        typer.echo(f"{record.record_id}  {record.stream} {record.entry_id}{tick}  group={record.group}")
        typer.echo(f"    reason: {record.reason}")
        typer.echo(f"    payload: {str(record.payload)[:300]}")
    if not records:
        typer.echo(f"{dead_letters}: no records")


@app.command()
def replay(stream: Stream, ids: Ids = None, every: All = False) -> None:
    """Re-publish records to their original stream (same event ids) and remove them from the dead letters."""
    dead_letters = dead_letters_of(stream)

    async def work(bus: Bus, settings: Settings) -> tuple[int, int]:
        replayed = skipped = 0
        retained = retained_streams(settings.tick_partitions)
        for record in await _selected(bus, dead_letters, ids, every):
            if not await bus.wait_for_room(retained, asyncio.Event(), "dlq replay"):
                break
            if await bus.replay_dead_letter(dead_letters, record):
                replayed += 1
            else:
                skipped += 1
        return replayed, skipped

    replayed, skipped = _with_bus(work)
    typer.echo(f"replayed {replayed} record(s) of {dead_letters}" + (f"; {skipped} already gone" if skipped else ""))


@app.command()
def drop(stream: Stream, ids: Ids = None, every: All = False) -> None:
    """Delete records for good."""
    dead_letters = dead_letters_of(stream)

    async def work(bus: Bus, _: Settings) -> int:
        dropped = 0
        for record in await _selected(bus, dead_letters, ids, every):
            dropped += await bus.drop_dead_letter(dead_letters, record.record_id)
        return dropped

    typer.echo(f"dropped {_with_bus(work)} record(s) of {dead_letters}")
