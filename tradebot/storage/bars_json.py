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
a zero, anything huge or not finite), where a time has a fraction of a second, or where the
server's extra_float_digits is 0 or less (then float8's text is not its shortest exact
spelling), the bar is not "plain": the caller then encodes the whole response from rows as
before. Nothing is ever approximated.
"""

from __future__ import annotations

# rounding.rounded's limits, as exact decimal literals of the same doubles: 2**52 and 2**-50.
_BELOW_2_52 = "4503599627370496"
_TIE_MARGIN = "8.8817841970012523233890533447265625e-16"
_PRICES = ("open", "high", "low", "close")


def _scale(name: str) -> str:
    """The power of ten of ``rounding.price`` (4 decimals below $1, else 2), of ``rounding.vwap`` (4)."""
    if name == "vwap":
        return "10000::float8"
    return f"(CASE WHEN abs({name}) < 1 THEN 10000 ELSE 100 END)::float8"


def _spelled(name: str) -> str:
    """The JSON of the double ``t.<name>``: float8's text is its shortest round-trip spelling
    (extra_float_digits >= 1); a whole number gets ".0" so it reads as a float, as msgspec writes it."""
    return f"t.{name} || CASE WHEN strpos(t.{name}, '.') + strpos(t.{name}, 'e') > 0 THEN '' ELSE '.0' END"


def bars_json_sql(history_sql: str, daily: bool) -> str:
    """``history_sql``'s bars as one row: ``count``, ``last`` (the newest bar's time), ``bars`` (the
    JSON objects joined by commas, oldest first; '' for none) and ``plain`` (false when a bar must
    be encoded from rows instead).

    Each step is a LATERAL of its own so every value is computed once a bar: the scaled value, its
    nearest integer, the rounded double and whether the fast arithmetic decides it, its text."""
    rounded = (*_PRICES, "vwap")
    scaled = ", ".join(f"{n} * {_scale(n)} AS {n}, {_scale(n)} AS {n}_scale" for n in rounded)
    whole = ", ".join(f"round(s.{n}) AS {n}" for n in rounded)
    shown = ", ".join(
        f"w.{n} / s.{n}_scale AS {n}, (abs(s.{n}) < {_BELOW_2_52} AND w.{n} <> 0 "
        f"AND abs(abs(s.{n} - w.{n}) - 0.5) > abs(s.{n}) * {_TIE_MARGIN}) AS {n}_decided"
        for n in rounded
    )
    texts = ", ".join([*(f"r.{n}::text AS {n}" for n in rounded), "found.volume::text AS volume"])
    session = "'\"' || to_char((ts AT TIME ZONE 'America/New_York')::date, 'YYYY-MM-DD') || '\"'" if daily else "'null'"
    bar = (
        "'{\"timestamp\":\"' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || 'Z\",'"
        f" || '\"session_date\":' || {session}"
        + "".join(f" || ',\"{n}\":' || {_spelled(n)}" for n in (*_PRICES, "volume"))
        + " || ',\"trade_count\":' || trade_count::text"
        + f" || ',\"vwap\":' || coalesce({_spelled('vwap')}, 'null') || '}}'"
    )
    # A number is plain when rounded's fast arithmetic decides it and it is finite (NaN and the
    # infinities fail abs() < 1e300); a missing vwap is null. Its text reads back as the same double
    # whenever extra_float_digits > 0 (PostgreSQL's default: the shortest exact spelling).
    checks = [f"(r.{n}_decided AND abs(r.{n}) < 1e300)" for n in _PRICES]
    checks.append("(found.vwap IS NULL OR (r.vwap_decided AND abs(r.vwap) < 1e300))")
    checks.append("abs(found.volume) < 1e300")
    exact = "current_setting('extra_float_digits')::int > 0"
    plain = " AND ".join([exact, "date_trunc('second', ts) = ts", "trade_count IS NOT NULL", *checks])
    return f"""SELECT count(*) AS count, max(ts) AS last, coalesce(string_agg({bar}, ',' ORDER BY ts), '') AS bars,
       coalesce(bool_and({plain}), true) AS plain
FROM ({history_sql}) found
CROSS JOIN LATERAL (SELECT {scaled} OFFSET 0) s
CROSS JOIN LATERAL (SELECT {whole} OFFSET 0) w
CROSS JOIN LATERAL (SELECT {shown} OFFSET 0) r
CROSS JOIN LATERAL (SELECT {texts} OFFSET 0) t"""
