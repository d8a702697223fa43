"""Field types of the models that take input from outside (the event API, feedback
reports): each refuses what no store can keep or no rule should see, with a message that
names the problem, so that the caller gets a 422 naming the field rather than a 500.

- :data:`Instant`: an ISO 8601 time with an offset, not before 1970-01-01T00:00:00Z (a time
  before the epoch is a mistake in every shop's data, and times near year 1 have no UTC
  equivalent). Times too far ahead are a business rule (the event intake's tolerance).
- :data:`Text`: a string without NUL characters or lone UTF-16 surrogates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, StringConstraints

#: The earliest instant accepted from outside.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def not_before_epoch(value: datetime) -> datetime:
    """``value`` when it is at or after :data:`EPOCH`; else ValueError."""
    if value.year > 1970:
        return value
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # near year 1: before the epoch by far
        utc = EPOCH.replace(year=1)
    if utc < EPOCH:
        raise ValueError(f"{value.isoformat()} is before 1970-01-01T00:00:00Z")
    return value


def storable_text(value: str) -> str:
    """``value`` when every store can keep it; else ValueError naming what is wrong."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone UTF-16 surrogate (not Unicode text)") from None
    return value


Instant = Annotated[AwareDatetime, AfterValidator(not_before_epoch)]
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$"), AfterValidator(storable_text)]
