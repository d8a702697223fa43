"""The workspace-wide control group in the store: which contacts marketing flows withhold.

Membership is :func:`winback.analytics.lift.in_control_group` (a keyed hash of the contact
id, settings ``control_group_share`` and ``control_group_salt``). The hash cannot run in
SQL on every database, so :func:`refresh` evaluates each contact once and keeps the answer
in ``control_group`` under the settings' *signature*; the enrolment statement of a
marketing flow then reads it (:func:`member`). New contacts are evaluated by id above the
last one evaluated; a change of salt or share re-evaluates everyone; a share of 0 empties
the table. Each slice of :data:`SLICE` contacts is its own transaction.

A withheld contact still *enters* the flow, as an entry that exits at once with reason
``control_group`` (held out, path ``control``): it takes no step and gets no message, and the
results compare it with the contacts the flow treated (:mod:`winback.results.attribution`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, exists, func, select
from sqlalchemy.sql.elements import ColumnElement

from winback.analytics.lift import in_control_group
from winback.config import Settings
from winback.flows._sql import upsert_insert
from winback.store.schema import contacts, control_group

#: Contacts evaluated per transaction.
SLICE = 20_000
#: The exit reason (and path token) of an entry the control group withheld.
REASON = "control_group"


def signature(settings: Settings) -> str:
    """What the stored evaluation was made under (salt and share)."""
    return f"{settings.control_group_share!r}:{settings.control_group_salt}"[:128]


def refresh(engine: Engine, settings: Settings) -> int:
    """Evaluate the contacts not yet evaluated under the current settings; returns how many
    were evaluated."""
    share, salt = settings.control_group_share, settings.control_group_salt
    sig = signature(settings)
    with engine.connect() as conn:
        kept = conn.execute(select(exists().select_from(control_group))).scalar()
        stale = (
            kept and conn.execute(select(exists().where(control_group.c.signature != sig))).scalar()
        )
    if kept and (stale or share == 0):
        with engine.begin() as conn:
            conn.execute(delete(control_group))
    if share == 0:
        return 0
    done = 0
    while True:
        with engine.connect() as conn:
            last = conn.execute(select(func.max(control_group.c.contact_id))).scalar() or 0
            ids = [
                int(i)
                for i in conn.execute(
                    select(contacts.c.id)
                    .where(contacts.c.id > last)
                    .order_by(contacts.c.id)
                    .limit(SLICE)
                ).scalars()
            ]
        if not ids:
            return done
        rows = [
            {"contact_id": i, "member": in_control_group(i, share=share, salt=salt),
             "signature": sig}
            for i in ids
        ]  # fmt: skip
        with engine.begin() as conn:  # another worker may have evaluated them meanwhile
            conn.execute(
                upsert_insert(conn, control_group).on_conflict_do_nothing(
                    index_elements=["contact_id"]
                ),
                rows,
            )
        done += len(ids)


def member(contact_id: Any) -> ColumnElement[bool]:
    """The contact is in the control group (SQL, correlated to ``contact_id``)."""
    return exists().where(
        control_group.c.contact_id == contact_id, control_group.c.member.is_(True)
    )


def is_marketing(program: Any) -> bool:
    """A flow the control group is withheld from: one with a marketing send."""
    return any(
        n.kind == "send" and n.step.send.priority == "marketing" for n in program.nodes.values()
    )
