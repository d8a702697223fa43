"""Every flow at a glance: status, entries and active contacts (one aggregate over the
entries), and on request the messages delivered and contacts reactivated, counted as
:mod:`winback.results.report` counts them (the same cohort and rules, so each figure equals
its counterpart in ``winback flows results``), in two aggregated statements per flow and
without the orders, attributed orders or intervals that a flow's own results compute. The
outcomes read every entry and message of each flow."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, select

from winback.config import Settings
from winback.flows._sql import at
from winback.flows.program import compile_program, parse_definition
from winback.results.attribution import Scope, reactivated_count
from winback.results.report import entry_segment
from winback.results.snapshot import stored
from winback.store.schema import events, flow_entries, flows, outbox


@dataclass(frozen=True)
class FlowGlance:
    key: str
    name: str
    status: str
    version: int
    trigger: str
    entered: int
    active: int
    #: Messages sent and not bounced (None: not computed).
    delivered: int | None = None
    #: Entries of the treatment group that were reactivated (reached a goal or left the
    #: entry segment within the conversion window), as in the results' treatment group.
    reactivated: int | None = None
    #: When delivered and reactivated were computed, if they come from the flow's kept
    #: results (:mod:`winback.results.snapshot`); None: counted for this answer.
    figures_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def delivered(conn: Connection, scope: Scope) -> int:
    """Messages of the flow's cohort sent and not bounced (``delivered`` of the results):
    status ``sent`` and no ``email_bounced`` event for the message up to ``as_of``."""
    m, fe = outbox, flow_entries
    bounced = exists().where(
        events.c.message_id == m.c.message_id,
        events.c.type == "email_bounced",
        events.c.occurred_at <= at(scope.as_of),
    )
    return int(
        conn.execute(
            select(func.count())
            .select_from(m.join(fe, fe.c.id == m.c.entry_id))
            .where(
                m.c.flow == scope.flow_key,
                m.c.status == "sent",
                fe.c.flow_id == scope.flow_id,
                fe.c.entered_at <= at(scope.as_of),
                ~and_(m.c.message_id.is_not(None), bounced),
            )
        ).scalar_one()
    )


def _trigger(definition: dict[str, Any]) -> str:
    key = next(iter(definition.get("trigger") or {}), "")
    return f"{key}: {definition['trigger'][key]}" if key else ""


def _statuses(conn: Connection) -> dict[tuple[int, str], int]:
    """Entries per flow and status: one aggregate over the entries' index."""
    fe = flow_entries
    return {
        (int(fid), str(status)): int(n)
        for fid, status, n in conn.execute(
            select(fe.c.flow_id, fe.c.status, func.count()).group_by(fe.c.flow_id, fe.c.status)
        )
    }


def _glance(row: Any, statuses: dict[tuple[int, str], int]) -> FlowGlance:
    return FlowGlance(
        key=row.key,
        name=row.name,
        status=row.status,
        version=int(row.version),
        trigger=_trigger(row.definition),
        entered=sum(n for (fid, _), n in statuses.items() if fid == row.id),
        active=statuses.get((int(row.id), "active"), 0),
    )


def flows_status(engine: Engine) -> list[FlowGlance]:
    """Every stored flow, by key, with its status, entries and active contacts (as
    ``winback flows list``); no outcomes."""
    with engine.connect() as conn:
        statuses = _statuses(conn)
        return [_glance(row, statuses) for row in conn.execute(select(flows).order_by(flows.c.key))]


def flows_at_a_glance(
    engine: Engine,
    settings: Settings,
    *,
    as_of: datetime,
    outcomes: bool = True,
    kept: bool = False,
) -> list[FlowGlance]:
    """Every stored flow, by key, with its figures as of ``as_of``; ``outcomes=False``
    leaves out delivered and reactivated (and reads only the entries' index); ``kept``:
    those of a flow's current kept results when there are (``results_snapshot_minutes``)."""
    out: list[FlowGlance] = []
    with engine.connect() as conn:
        statuses = _statuses(conn)
        snapshots = stored(conn) if outcomes and kept and settings.results_snapshot_minutes else {}
        for row in conn.execute(select(flows).order_by(flows.c.key)).all():
            glance = _glance(row, statuses)
            snap = snapshots.get(int(row.id))
            if snap is not None:
                glance = replace(
                    glance,
                    delivered=snap.delivered,
                    reactivated=snap.reactivated,
                    figures_at=snap.computed_at,
                )
            elif outcomes:
                program = compile_program(row.key, parse_definition(row.definition, path=row.key))
                scope = Scope(
                    flow_id=int(row.id),
                    flow_key=row.key,
                    as_of=as_of,
                    attribution_days=settings.attribution_window_days,
                    conversion_days=settings.conversion_window_days,
                    entry_segment_id=entry_segment(conn, program.definition),
                )
                glance = replace(
                    glance,
                    delivered=delivered(conn, scope),
                    reactivated=reactivated_count(conn, scope),
                )
            out.append(glance)
    return out


__all__ = ["FlowGlance", "delivered", "flows_at_a_glance", "flows_status"]
