"""Wall-clock times in a contact's time zone (``wait_until`` steps, schedule triggers)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone_or_default(name: str | None, default: str) -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")  # pragma: no cover


def next_local_time(now: datetime, local_time: str, zone: str | None, default: str) -> datetime:
    """The first instant at or after ``now`` when the wall clock in ``zone`` shows
    ``local_time`` (HH:MM)."""
    tz = zone_or_default(zone, default)
    hour, minute = (int(p) for p in local_time.split(":"))
    local = now.astimezone(tz)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate < local:
        day = candidate.date() + timedelta(days=1)
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    return candidate.astimezone(now.tzinfo)
