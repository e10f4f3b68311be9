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

from functools import cache

# rounding.rounded's limits, as exact decimal literals of the same doubles: 2**52 and 2**-50.
_BELOW_2_52 = "4503599627370496"
_TIE_MARGIN = "8.8817841970012523233890533447265625e-16"
_PRICES = ("open", "high", "low", "close")
# Whether float8's text is its shortest exact spelling (extra_float_digits > 0, PostgreSQL's default).
_EXACT = "current_setting('extra_float_digits')::int > 0"


def _scale(name: str) -> str:
    """The power of ten of ``rounding.price`` (4 decimals below $1, else 2), of ``rounding.vwap`` (4)."""
    if name == "vwap":
        return "10000::float8"
    return f"(CASE WHEN abs({name}) < 1 THEN 10000 ELSE 100 END)::float8"


def _spelled(name: str) -> str:
    """The JSON of the double whose float8 text is ``<name>_text``: that text is its shortest
    round-trip spelling (extra_float_digits >= 1); a whole number gets ".0" so it reads as a float,
    as msgspec writes it (``<name>_whole``, see ``_whole``)."""
    return f"{name}_text || CASE WHEN {name}_whole THEN '.0' ELSE '' END"


def _whole(name: str) -> str:
    """Whether float8's shortest text of ``name`` has neither a '.' nor an 'e': a whole number
    below 1e15 (float8out writes fixed notation for 1e-4 <= |x| < 1e15, exponents beyond) or
    zero. (NaN and the infinities, the exceptions, never make a plain bar.) Two comparisons
    instead of two strpos over the text."""
    return f"({name} = trunc({name}) AND abs({name}) < 1e15) AS {name}_whole"


@cache
def bars_json_sql(history_sql: str, daily: bool, fragments: bool = False) -> str:
    """``history_sql``'s bars as one row: ``count``, ``last`` (the newest bar's time), ``bars`` (the
    JSON objects joined by commas, oldest first; '' for none) and ``plain`` (false when a bar must
    be encoded from rows instead).

    ``fragments``: ``history_sql`` also returns ``fragment``, a bar's JSON spelled before (the kept
    1-minute series' ``bar_json``, storage/fragments.py; NULL: not spelled yet, '': to be spelled
    when read, e.g. not plain); those bars are joined as they are, only the others spelled here."""
    if not fragments:
        return f"""SELECT count(*) AS count, max(ts) AS last, coalesce(string_agg(bar, ',' ORDER BY ts), '') AS bars,
       coalesce(bool_and(plain), true) AS plain
FROM ({spelled_bars_sql(f"({history_sql}) found", daily)}) bars"""
    return _joined_sql(history_sql, daily)


def _joined_sql(
    found_sql: str, daily: bool, more: str = "", joined: str = "TRUE", unspelled: str = "found", ctes: str = ""
) -> str:
    """bars_json_sql's row of ``found_sql``'s bars with their ``fragment``; ``more``: further
    columns of the row (", <expression> AS <name>"); ``joined``: a condition on the whole of them
    (not on a bar), without which none is joined or spelled; ``unspelled``: the FROM item with the
    columns of series.history_sql that the bars without a fragment are spelled from (by default
    ``found`` itself); ``ctes``: further common table expressions (", name AS (...)")."""
    # MATERIALIZED: the bars are found once, then split into the spelled and the unspelled. The
    # setting is read once (a subquery), not for every bar (~0.1-0.3 ms per 1,000).
    spelled_here = spelled_bars_sql(unspelled, daily, f"coalesce(fragment, '') = '' AND {joined}")
    return f"""WITH found AS MATERIALIZED ({found_sql}){ctes}
SELECT count(*) AS count, max(ts) AS last, coalesce(string_agg(bar, ',' ORDER BY ts), '') AS bars,
       coalesce(bool_and(plain), true) AS plain{more}
FROM (
    SELECT ts, fragment AS bar, (SELECT {_EXACT}) AS plain FROM found WHERE fragment <> '' AND {joined}
    UNION ALL
    SELECT ts, bar, plain FROM ({spelled_here}) spelled_here
) bars"""


# Whether a stored 1-minute bar of $1 lies in [$2, $3).
_STORED_MINUTES = "EXISTS (SELECT 1 FROM bars WHERE symbol = $1 AND timeframe = '1m' AND ts >= $2 AND ts < $3)"


@cache
def kept_minutes_json_sql(newest_first: bool) -> str:
    """bars_json_sql's row of the kept 1-minute series' rows of $1 in [$2, $3), at most $4 of them
    from the oldest (or newest) end, plus ``stored_minutes``: whether a stored 1-minute bar lies in
    that range. Without one, those rows are the 1-minute series there (series.py: a stored bar is
    the only thing that takes a minute from the kept series), read without its precedence steps
    (~2 of ~2.5 ms of PostgreSQL CPU per 1,000 spelled bars, planning included); with one, the
    row is empty and the series is read with bars_json_sql(history_sql(...)) instead."""
    order = "DESC" if newest_first else "ASC"
    found = f"""SELECT bucket AS ts, open, high, low, close, volume, trade_count, notional / NULLIF(volume, 0) AS vwap,
           bar_json AS fragment
    FROM ohlcv_kept_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3 AND NOT {_STORED_MINUTES}
    ORDER BY bucket {order} LIMIT $4"""
    return _joined_sql(found, daily=False, more=f", {_STORED_MINUTES} AS stored_minutes")


def first_kept_minutes_json_sql(newest_first: bool, allowed: str = "TRUE", more: str = "") -> str:
    """``kept_minutes_json_sql``'s row without a window found before: the first $4 kept 1-minute
    rows of $1 in [$2, $3) from the oldest (or newest) end, where ``allowed`` (an SQL condition,
    evaluated once) holds, and ``stored_minutes``: whether a stored 1-minute bar lies between $2
    (or $3) and the last row found when $4 were found, else anywhere in [$2, $3) — the window those
    rows span; then no bar is returned, as in ``kept_minutes_json_sql``. ``more``: further columns
    (", <expression> AS <name>").

    The same rows as ``kept_minutes_json_sql`` over the window up to the $4-th kept minute
    (queries._range_sql's edge), because a kept minute and a stored bar only lie within the
    ticks' and bars' range, which only clamps that window: one statement, no range and no edge
    asked for first.

    The minutes are found by their time and JSON alone, an index-only scan of the primary key,
    which carries ``bar_json`` (migrations/postgresql/0027_kept_minutes_cover.sql): ~35 index pages
    per 1,000 minutes instead of up to one heap page each. Only a minute not spelled yet (the
    latest, or one a late tick changed) reads its values from the table."""
    order = "DESC" if newest_first else "ASC"
    if newest_first:
        lower, upper = "(SELECT CASE WHEN count(*) = $4 THEN min(ts) ELSE $2 END FROM found)", "$3"
    else:
        lower, upper = (
            "$2",
            "(SELECT CASE WHEN count(*) = $4 THEN max(ts) + INTERVAL '1 minute' ELSE $3 END FROM found)",
        )
    found = f"""SELECT bucket AS ts, bar_json AS fragment
    FROM ohlcv_kept_1m WHERE symbol = $1 AND bucket >= $2 AND bucket < $3 AND {allowed}
    ORDER BY bucket {order} LIMIT $4"""
    # OFFSET 0: one primary-key probe per unspelled minute, never a join planned over the table.
    unspelled = """(SELECT found.ts, found.fragment, k.*
    FROM found, LATERAL (
        SELECT open, high, low, close, volume, trade_count, notional / NULLIF(volume, 0) AS vwap
        FROM ohlcv_kept_1m WHERE symbol = $1 AND bucket = found.ts OFFSET 0
    ) k WHERE coalesce(found.fragment, '') = '') unspelled"""
    # Computed once (the window's bound reads every minute found), read three times.
    stored = f""", stored AS (
    SELECT EXISTS (SELECT 1 FROM bars WHERE symbol = $1 AND timeframe = '1m' AND ts >= {lower} AND ts < {upper})
        AS stored
)"""
    # Nothing is spelled where a stored bar lies (it may hide a minute whose spelling overflows).
    return _joined_sql(
        found,
        daily=False,
        more=f", (SELECT stored FROM stored) AS stored_minutes{more}",
        joined="NOT (SELECT stored FROM stored)",
        unspelled=unspelled,
        ctes=stored,
    )


def spelled_bars_sql(source: str, daily: bool, where: str = "TRUE", carried: str = "") -> str:
    """``ts``, ``bar`` (its JSON object) and ``plain`` (see bars_json_sql) of each row of ``source``
    (a FROM item with the columns of series.history_sql) that meets ``where``; ``carried``: more
    columns of ``source`` passed through (e.g. "symbol, ").

    Each step is a subquery of its own so every value is computed once a bar: the scaled value,
    its nearest integer, the rounded double and whether the fast arithmetic decides it, its text."""
    rounded = (*_PRICES, "vwap")
    kept = f"{carried}ts, trade_count, volume, vwap_missing"
    scaled = ", ".join(f"{n} * {_scale(n)} AS {n}_scaled, {_scale(n)} AS {n}_scale" for n in rounded)
    carried_scaled = ", ".join(f"{n}_scaled, {n}_scale" for n in rounded)
    whole = ", ".join(f"round({n}_scaled) AS {n}_whole" for n in rounded)
    shown = ", ".join(
        f"{n}_whole / {n}_scale AS {n}, (abs({n}_scaled) < {_BELOW_2_52} AND {n}_whole <> 0 "
        f"AND abs(abs({n}_scaled - {n}_whole) - 0.5) > abs({n}_scaled) * {_TIE_MARGIN}) AS {n}_decided"
        for n in rounded
    )
    # A number is plain when rounded's fast arithmetic decides it and it is finite (NaN and the
    # infinities fail abs() < 1e300); a missing vwap is null. Its text reads back as the same double
    # whenever extra_float_digits > 0 (PostgreSQL's default: the shortest exact spelling).
    checks = [f"({n}_decided AND abs({n}) < 1e300)" for n in _PRICES]
    checks.append("(vwap_missing OR (vwap_decided AND abs(vwap) < 1e300))")
    checks.append("abs(volume) < 1e300")
    plain = " AND ".join([_EXACT, "date_trunc('second', ts) = ts", "trade_count IS NOT NULL", *checks])
    spelled = (*rounded, "volume")
    texts = ", ".join([*(f"{n}::text AS {n}_text, {_whole(n)}" for n in spelled), f"{plain} AS plain"])
    session = "'\"' || to_char((ts AT TIME ZONE 'America/New_York')::date, 'YYYY-MM-DD') || '\"'" if daily else "'null'"
    bar = (
        "'{\"timestamp\":\"' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || 'Z\",'"
        f" || '\"session_date\":' || {session}"
        + "".join(f" || ',\"{n}\":' || {_spelled(n)}" for n in (*_PRICES, "volume"))
        + " || ',\"trade_count\":' || trade_count::text"
        + f" || ',\"vwap\":' || coalesce({_spelled('vwap')}, 'null') || '}}'"
    )
    # OFFSET 0 keeps the planner from merging a step into the next (which would compute its
    # expressions again where they are used); a LATERAL per step did the same through a nested
    # loop with a Memoize node each that never hits (~1 ms of ~6 per 1,000 bars).
    return f"""SELECT {carried}ts, {bar} AS bar, plain
FROM (SELECT {carried}ts, trade_count, {texts} FROM (
    SELECT {kept}, {shown} FROM (
        SELECT {kept}, {carried_scaled}, {whole} FROM (
            SELECT {carried}ts, trade_count, volume, vwap IS NULL AS vwap_missing, {scaled} FROM {source}
            WHERE {where} OFFSET 0
        ) scaled OFFSET 0
    ) whole OFFSET 0
) shown OFFSET 0) spelled"""
