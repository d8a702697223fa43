"""Daily snapshots: figures of the whole base kept once per day (table ``daily_snapshots``)
so that the dashboard reads trends and expensive figures without rescanning history.

Kinds and their writers:

- ``base``: :func:`winback.summary.base_summary` (what ``winback summary --json`` prints),
  taken by the segment refresh of an engine pass when the day's is missing or older than
  :data:`BASE_MAX_AGE`, and on demand (:func:`take_base`);
- ``analysis``: the report of ``winback analyze`` (what ``--json`` prints and ``--html``
  draws), written by the analysis when it stores its results;
- ``segments``: current member counts per segment, written by each segment refresh.

A later snapshot of a kind on the same day replaces the earlier one. Values are stored as
plain JSON: dates and instants as ISO 8601 text, decimals as numbers; NaN and infinities
(which JSON lacks) as ``{"__float__": "nan"}`` and read back as floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from winback.clock import as_utc
from winback.store.schema import daily_snapshots, segments
from winback.summary import base_summary

BASE = "base"
ANALYSIS = "analysis"
SEGMENTS = "segments"
KINDS = (BASE, ANALYSIS, SEGMENTS)

#: The engine pass takes a new ``base`` snapshot when the day's is older than this.
BASE_MAX_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class Snapshot:
    """One day's figures of one kind."""

    day: date
    kind: str
    taken_at: datetime
    data: dict[str, Any]


#: The key of the object standing for a float JSON cannot hold (NaN, infinities).
FLOAT_KEY = "__float__"


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: dates as ISO text, decimals and NumPy numbers as
    numbers, tuples and sets as lists, NaN and infinities as ``{FLOAT_KEY: repr}``."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "item"):  # NumPy scalars
        return plain(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else {FLOAT_KEY: repr(value)}
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def restored(value: Any) -> Any:
    """Stored JSON data with the floats :func:`plain` wrapped back as floats."""
    if isinstance(value, dict):
        if len(value) == 1 and FLOAT_KEY in value:
            return float(value[FLOAT_KEY])
        return {k: restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restored(v) for v in value]
    return value


def write(
    engine: Engine | Connection, kind: str, day: date, data: Mapping[str, Any], *, at: datetime
) -> Snapshot:
    """Store (or replace) the snapshot of ``kind`` for ``day``."""
    if kind not in KINDS:
        raise ValueError(f"unknown snapshot kind {kind!r} (expected one of {', '.join(KINDS)})")
    doc = plain(data)
    t = daily_snapshots
    row = {"snapshot_date": day, "kind": kind, "taken_at": at, "data": doc}

    def run(conn: Connection) -> None:
        # An upsert: two processes taking the day's snapshot at once both succeed.
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(t).values(**row)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.snapshot_date, t.c.kind],
                set_={"taken_at": stmt.excluded.taken_at, "data": stmt.excluded.data},
            )
        )

    if isinstance(engine, Connection):
        run(engine)
    else:
        with engine.begin() as conn:
            run(conn)
    return Snapshot(day, kind, as_utc(at), restored(doc))


def _snapshot(day: date, kind: str, taken_at: datetime, data: Any) -> Snapshot:
    return Snapshot(day, kind, as_utc(taken_at), restored(data))


def latest(engine: Engine, kind: str) -> Snapshot | None:
    """The most recent snapshot of ``kind``, if any."""
    found = series(engine, kind, limit=1)
    return found[-1] if found else None


def on(engine: Engine, kind: str, day: date) -> Snapshot | None:
    """The snapshot of ``kind`` for ``day``, if any."""
    t = daily_snapshots
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.snapshot_date, t.c.kind, t.c.taken_at, t.c.data).where(
                t.c.kind == kind, t.c.snapshot_date == day
            )
        ).first()
    return _snapshot(*row) if row is not None else None


def series(engine: Engine, kind: str, *, limit: int = 90) -> list[Snapshot]:
    """The last ``limit`` snapshots of ``kind``, oldest first (one indexed range read)."""
    t = daily_snapshots
    query = (
        select(t.c.snapshot_date, t.c.kind, t.c.taken_at, t.c.data)
        .where(t.c.kind == kind)
        .order_by(t.c.snapshot_date.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    return [_snapshot(*r) for r in reversed(rows)]


def series_part(
    engine: Engine, kind: str, path: tuple[str, ...], *, limit: int = 90
) -> list[tuple[date, Any]]:
    """Part ``path`` (keys into the document) of the last ``limit`` snapshots of ``kind``,
    oldest first, extracted in SQL (the rest of each document is not read)."""
    t = daily_snapshots
    part: Any = t.c.data
    for key in path:
        part = part[key]
    query = (
        select(t.c.snapshot_date, part)
        .where(t.c.kind == kind)
        .order_by(t.c.snapshot_date.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    return [(day, restored(value)) for day, value in reversed(rows)]


def take_base(engine: Engine, *, now: datetime, days: int, currency: str) -> Snapshot:
    """Compute :func:`~winback.summary.base_summary` at ``now`` and store it as that day's
    ``base`` snapshot (with the workspace currency, as ``winback summary --json`` adds it)."""
    data = base_summary(engine, now=now, days=days)
    data["currency"] = currency
    return write(engine, BASE, as_utc(now).date(), data, at=now)


def base_is_due(engine: Engine, now: datetime) -> bool:
    """Whether the day of ``now`` has no ``base`` snapshot, or one older than
    :data:`BASE_MAX_AGE`."""
    found = on(engine, BASE, as_utc(now).date())
    return found is None or as_utc(found.taken_at) <= as_utc(now) - BASE_MAX_AGE


def record_segment_counts(conn: Connection, *, now: datetime) -> Snapshot:
    """Store every segment's current member count as the day's ``segments`` snapshot."""
    counts = {
        name: int(n or 0)
        for name, n in conn.execute(select(segments.c.name, segments.c.member_count))
    }
    return write(conn, SEGMENTS, as_utc(now).date(), {"members": counts}, at=now)
