"""Results snapshots: each flow's results as last computed, kept in ``results_snapshots``.

Counting a flow's results reads every entry, message and attributed order of the flow
(:mod:`winback.results.attribution`): seconds at a million contacts. The engine loop calls
:func:`refresh` after its passes; a flow's results are computed again when the kept ones are
older than ``results_snapshot_minutes`` or were computed for another version of the flow.
The dashboard and the management API read :func:`kept` (the results and when they were
computed, which the pages show) and count live only when nothing current is kept;
``winback flows results`` always counts live.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, insert, select

from winback.config import Settings
from winback.flows.program import compile_program, parse_definition
from winback.results.report import compute
from winback.store.schema import flows, results_snapshots

if TYPE_CHECKING:
    from winback.workspace import Workspace

#: Instants of the results, kept as ISO 8601 text and read back as datetimes.
INSTANTS = ("as_of", "since", "until")


@dataclass(frozen=True)
class Snapshot:
    """A flow's results as computed at ``computed_at`` (``FlowResults.to_dict`` form)."""

    flow_id: int
    flow_version: int
    computed_at: datetime
    seconds: float
    delivered: int
    reactivated: int
    results: dict[str, Any]

    def age(self, now: datetime) -> timedelta:
        return max(timedelta(0), now - self.computed_at)


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _figures(results: dict[str, Any]) -> tuple[int, int]:
    """Delivered (every step's messages) and reactivated (the treatment group) of the
    results, as the flows list shows them."""
    delivered = sum(int(step["delivered"]) for step in results["steps"])
    treatment = next(g for g in results["groups"] if g["group"] == "treatment")
    return delivered, int(treatment["reactivated"])


def _snapshot(row: Any) -> Snapshot:
    results = json.loads(row.data)
    for name in INSTANTS:
        if results.get(name) is not None:
            results[name] = datetime.fromisoformat(results[name])
    return Snapshot(
        flow_id=int(row.flow_id),
        flow_version=int(row.flow_version),
        computed_at=row.computed_at,
        seconds=float(row.seconds),
        delivered=int(row.delivered),
        reactivated=int(row.reactivated),
        results=results,
    )


def stored(conn: Connection) -> dict[int, Snapshot]:
    """Every kept snapshot that is current (its flow's version), by flow id."""
    rows = conn.execute(
        select(results_snapshots)
        .join(flows, flows.c.id == results_snapshots.c.flow_id)
        .where(results_snapshots.c.flow_version == flows.c.version)
    ).all()
    return {int(row.flow_id): _snapshot(row) for row in rows}


def kept(engine: Engine, settings: Settings, flow_id: int) -> Snapshot | None:
    """The flow's kept results when snapshots are on and the kept ones are for the flow's
    current version, else None (the caller counts live)."""
    if settings.results_snapshot_minutes == 0:
        return None
    with engine.connect() as conn:
        return stored(conn).get(flow_id)


def refresh(engine: Engine, settings: Settings, now: datetime, *, force: bool = False) -> list[str]:
    """Compute and keep the results of every flow whose kept results are older than
    ``results_snapshot_minutes`` (or missing, or for another version); ``force``: of every
    flow. Returns the keys of the flows computed. Nothing is kept when the setting is 0."""
    minutes = settings.results_snapshot_minutes
    if minutes == 0 and not force:
        return []
    with engine.connect() as conn:
        rows = conn.execute(select(flows).order_by(flows.c.key)).all()
        current = stored(conn)
    done = []
    for row in rows:
        old = current.get(int(row.id))
        if not force and old is not None and old.age(now) < timedelta(minutes=minutes):
            continue
        program = compile_program(row.key, parse_definition(row.definition, path=row.key))
        started = time.perf_counter()
        results = compute(engine, settings, program, int(row.id), as_of=now).to_dict()
        delivered, reactivated = _figures(results)
        values = {
            "flow_id": int(row.id),
            "flow_version": int(row.version),
            "computed_at": now,
            "seconds": round(time.perf_counter() - started, 3),
            "delivered": delivered,
            "reactivated": reactivated,
            "data": json.dumps(results, default=_text),
        }
        with engine.begin() as conn:
            conn.execute(delete(results_snapshots).where(results_snapshots.c.flow_id == row.id))
            conn.execute(insert(results_snapshots).values(**values))
        done.append(str(row.key))
    return done


def results_of(ws: Workspace, key: str) -> tuple[dict[str, Any], Snapshot | None]:
    """A flow's results for a page or the API: the kept ones with their snapshot when
    current, else counted live now (and None)."""
    row = ws.flows._row(key)
    snap = kept(ws.engine, ws.settings, int(row.id))
    if snap is not None:
        return snap.results, snap
    from winback.results.report import flow_results

    return flow_results(ws, row.key, as_of=ws.clock.now()).to_dict(), None


__all__ = ["Snapshot", "kept", "refresh", "results_of", "stored"]
