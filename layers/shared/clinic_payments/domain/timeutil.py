"""Timestamps: ISO 8601 UTC with milliseconds and a Z, one format, so they sort as text; and the
date a clinic sees them on, in its own time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "UTC"


def to_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def is_timezone(name: str) -> bool:
    """An IANA time zone name this runtime knows (the layer ships tzdata)."""
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def local_date(at: str, timezone: str) -> str:
    """The calendar date (YYYY-MM-DD) of a timestamp in a clinic's time zone: a card taken at
    8 pm in Toronto is dated that day, not the next day as in UTC."""
    return from_iso(at).astimezone(ZoneInfo(timezone)).date().isoformat()
