"""The period a flow's results cover: ``since`` / ``until`` bounds given as an ISO date
(a whole day in the shop's time zone) or date-time."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from winback.errors import WinbackError


class BadDate(WinbackError):
    """``since`` / ``until`` is not an ISO date or date-time."""


def parse_bound(option: str, text: str, zone: str, *, end: bool) -> datetime:
    """An ISO date (the start of that day, or for ``end`` the start of the next, so that
    ``until`` includes the day) or date-time, read in the shop's time zone without an
    offset; returned in UTC. ``option`` names the bound in the error."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            value = datetime.combine(day + timedelta(days=1 if end else 0), time())
        else:
            value = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise BadDate(
            f"{option} {text!r}: expected an ISO date like 2026-03-01 or a date-time like "
            "2026-03-01T09:00"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    try:
        return value.astimezone(ZoneInfo("UTC"))
    except OverflowError:
        raise BadDate(f"{option} {text!r}: out of range") from None


def period(
    since: str | None, until: str | None, zone: str, *, names: tuple[str, str] = ("since", "until")
) -> tuple[datetime | None, datetime | None]:
    """The UTC bounds of ``since`` and ``until`` (each optional), ``until`` included."""
    begin = parse_bound(names[0], since, zone, end=False) if since else None
    end = parse_bound(names[1], until, zone, end=True) if until else None
    return begin, end
