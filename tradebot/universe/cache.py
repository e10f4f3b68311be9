"""The day cache of the raw asset list (before our filters) under `<data_dir>/universe/`.

One file per UTC day, so changing a filter setting never needs a refetch and every worker of the
day sees the same list; when the API is unreachable the newest readable file is the fallback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path

from tradebot.universe.filters import ListedAsset

logger = logging.getLogger(__name__)

CACHE_FILE_PATTERN = re.compile(r"^all-(\d{4}-\d{2}-\d{2})\.json$")


def cache_dir(data_dir: Path) -> Path:
    return data_dir / "universe"


def cache_path(data_dir: Path, day: date) -> Path:
    """`<data_dir>/universe/all-YYYY-MM-DD.json`: the file name carries the day it is valid for."""
    return cache_dir(data_dir) / f"all-{day.isoformat()}.json"


def write_cache(data_dir: Path, day: date, assets: list[ListedAsset]) -> Path:
    """Write the day's cache atomically (workers may resolve at once), then drop older days."""
    path = cache_path(data_dir, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "date": day.isoformat(),
        "fetched_at": datetime.now(UTC).isoformat(),
        "assets": [asdict(asset) for asset in assets],
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".all-", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(payload, file)
    os.replace(temporary, path)
    _remove_older_caches(data_dir, day)
    return path


def _remove_older_caches(data_dir: Path, day: date) -> None:
    for cached_day, path in cached_days(data_dir):
        if cached_day < day:
            path.unlink(missing_ok=True)


def cached_days(data_dir: Path) -> list[tuple[date, Path]]:
    """Cache files found, newest first."""
    found = []
    directory = cache_dir(data_dir)
    for path in directory.glob("all-*.json") if directory.is_dir() else []:
        match = CACHE_FILE_PATTERN.match(path.name)
        if match:
            found.append((date.fromisoformat(match.group(1)), path))
    return sorted(found, reverse=True)


def read_cache(path: Path) -> list[ListedAsset] | None:
    """The cached assets, or None (with a warning) when the file is unreadable."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return [ListedAsset(**item) for item in payload["assets"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unreadable universe cache %s: %s", path, error)
        return None


def read_day_cache(data_dir: Path, day: date) -> list[ListedAsset] | None:
    """The cache written for `day`, or None when there is none or it is unreadable."""
    path = cache_path(data_dir, day)
    return read_cache(path) if path.exists() else None


def newest_readable_cache(data_dir: Path) -> tuple[date, list[ListedAsset]] | None:
    """The offline fallback: the newest cache that reads cleanly (skipping broken ones), or None."""
    for cached_day, path in cached_days(data_dir):
        assets = read_cache(path)
        if assets is not None:
            return cached_day, assets
    return None


def describe_age(cached_day: date, today: date) -> str:
    """How stale a cache is, for the fallback warning: "1 day old", "3 days old"."""
    age_days = (today - cached_day).days
    return f"{age_days} day{'' if age_days == 1 else 's'} old"
