"""``wait_until``: hold the entry until the next time the contact's wall clock (their own
time zone, else the workspace's) shows a local time of day."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import select

from winback.flows._sql import Rule, fe
from winback.flows.fields import FlowModel, LocalTime
from winback.flows.local_time import next_local_time
from winback.flows.steps.base import Batch, Moves, StepModel
from winback.store.schema import contacts


class WaitUntil(FlowModel):
    local_time: LocalTime


class WaitUntilStep(StepModel):
    kind: ClassVar[str] = "wait_until"
    wait_until: WaitUntil


def run(batch: Batch, step: WaitUntilStep) -> Moves:
    local_time, now, default = step.wait_until.local_time, batch.now, batch.default_timezone
    zones = {
        z
        for (z,) in batch.conn.execute(
            select(contacts.c.timezone).distinct().where(contacts.c.id.in_(batch.contact_ids))
        )
    }
    tz_of = (
        select(contacts.c.timezone)
        .where(contacts.c.id == fe.c.contact_id)
        .correlate(fe)
        .scalar_subquery()
    )
    rules = []
    for zone in sorted(z for z in zones if z):
        wake = next_local_time(now, local_time, zone, default)
        rules.append(Rule("waited", batch.node.next, when=tz_of == zone, wake_at=wake))
    fallback = next_local_time(now, local_time, None, default)
    rules.append(Rule("waited", batch.node.next, wake_at=fallback))
    return Moves(rules, log=False)
