"""/history's bars encoded by PostgreSQL: the JSON array of a series, built in the query.

A 1,000-bar response cost the API ~1 ms of PostgreSQL and ~15 ms of Python per request (the rows
decoded by asyncpg, five numbers a bar rounded, the document encoded). Here the query rounds and
spells every bar and ``string_agg`` joins them, so the API passes one string through.

The bars must be the ones routes_history.history_json encodes from the rows, float for float
(tests/test_bars_json.py compares both over stored data; only a number's spelling may differ,
which no JSON reader can tell apart). So the rounding is rounding.rounded's own arithmetic, in
double precision, which PostgreSQL computes as Python does (IEEE 754: ``*``, ``/``, ``round``
breaking ties to even as ``rint`` does): a value scaled by an exact power of ten, rounded to the
nearest integer, divided back. Where ``rounded`` itself defers to Python's ``round`` (near a tie,
a zero, anything huge or not finite), and where a printed number would not read back as the same
double or a time has a fraction of a second, the bar is not "plain": the caller then encodes the
whole response from rows as before. Nothing is ever approximated.
"""

from __future__ import annotations

# rounding.rounded's limits, as exact decimal literals of the same doubles: 2**52 and 2**-50.
_BELOW_2_52 = "4503599627370496"
_TIE_MARGIN = "8.8817841970012523233890533447265625e-16"


def _scale(value: str, digits: int | None) -> str:
    """The power of ten of ``rounding.price`` (4 decimals below $1, else 2) or of a fixed ``digits``."""
    if digits is not None:
        return f"{10**digits}::float8"
    return f"(CASE WHEN abs({value}) < 1 THEN 10000 ELSE 100 END)::float8"


def _rounded(value: str, digits: int | None) -> tuple[str, str]:
    """(the rounded double, whether rounded's fast arithmetic decides it) for the column ``value``."""
    scaled = f"({value} * {_scale(value, digits)})"
    whole = f"round({scaled})"
    rounded = f"({whole} / {_scale(value, digits)})"
    decided = (
        f"(abs({scaled}) < {_BELOW_2_52} AND {whole} <> 0 "
        f"AND abs(abs({scaled} - {whole}) - 0.5) > abs({scaled}) * {_TIE_MARGIN})"
    )
    return rounded, decided


def _number(value: str) -> tuple[str, str]:
    """(the JSON spelling of the double ``value``, whether it reads back as that very double).

    float8's text is its shortest round-trip spelling (extra_float_digits >= 1); a whole number
    gets ".0" so it reads as a float, as msgspec writes it. NaN and infinities are never plain."""
    text = f"{value}::text"
    spelled = f"{text} || CASE WHEN {text} ~ '[.e]' THEN '' ELSE '.0' END"
    reads_back = f"(abs({value}) < 1e300 AND ({text})::float8 = {value})"
    return spelled, reads_back


def _field(name: str, value: str, digits: int | None, rounded: bool = True, nullable: bool = False) -> tuple[str, str]:
    """('"name":<number>' or null, whether that part is plain) for one number of a bar."""
    shown, decided = _rounded(value, digits) if rounded else (value, "true")
    spelled, reads_back = _number(shown)
    part = f"'\"{name}\":' || {spelled}"
    plain = f"({decided} AND {reads_back})"
    if nullable:
        return f"'\"{name}\":' || coalesce({spelled}, 'null')", f"({value} IS NULL OR {plain})"
    return part, f"({value} IS NOT NULL AND {plain})"


def bars_json_sql(history_sql: str, daily: bool) -> str:
    """``history_sql``'s bars as one row: ``count``, ``bars`` (the JSON objects joined by commas,
    oldest first; '' for none) and ``plain`` (false when a bar must be encoded from rows instead)."""
    session = "'\"' || to_char((ts AT TIME ZONE 'America/New_York')::date, 'YYYY-MM-DD') || '\"'" if daily else "'null'"
    fields = [
        _field("open", "open", None),
        _field("high", "high", None),
        _field("low", "low", None),
        _field("close", "close", None),
        _field("volume", "volume", None, rounded=False),
    ]
    vwap = _field("vwap", "vwap", 4, nullable=True)
    bar = (
        "'{\"timestamp\":\"' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || 'Z\",'"
        f" || '\"session_date\":' || {session} || ','"
        + "".join(f" || {part} || ','" for part, _ in fields)
        + " || '\"trade_count\":' || trade_count::text || ','"
        + f" || {vwap[0]} || '}}'"
    )
    plain = " AND ".join(
        ["date_trunc('second', ts) = ts", "trade_count IS NOT NULL"] + [check for _, check in [*fields, vwap]]
    )
    return f"""SELECT count(*) AS count, coalesce(string_agg({bar}, ',' ORDER BY ts), '') AS bars,
       coalesce(bool_and({plain}), true) AS plain
FROM ({history_sql}) found"""
