"""One contact seen whole: profile, consent, tags, segments, flows in progress, messages.

Flows in progress come from ``winback.flows.inspect.contact_flows(workspace, contact_id)``
when the flows package provides it (the key is left out otherwise)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from winback.store.schema import CHANNELS, contacts, outbox
from winback.tags import resolve_contacts, tags_of_contact

if TYPE_CHECKING:
    from winback.workspace import Workspace

#: Module and function that report a contact's flows in progress (provided by the flows area).
FLOWS_HOOK = ("winback.flows.inspect", "contact_flows")
MESSAGE_COLUMNS = (
    "id",
    "channel",
    "template",
    "variant",
    "flow",
    "step",
    "status",
    "not_before",
    "sent_at",
    "message_id",
    "last_error",
)


def contact_profile(ws: Workspace, ref: str, *, messages: int = 50) -> dict[str, Any]:
    """Everything about the contact named by ``ref`` (its ``customer_id``, email address or
    ``#ID``)."""
    contact_id = resolve_contacts(ws, [ref])[0]
    with ws.engine.connect() as conn:
        row = dict(
            conn.execute(select(contacts).where(contacts.c.id == contact_id)).mappings().one()
        )
        sent = [
            dict(r)
            for r in conn.execute(
                select(*(outbox.c[c] for c in MESSAGE_COLUMNS))
                .where(outbox.c.contact_id == contact_id)
                .order_by(outbox.c.created_at.desc(), outbox.c.id.desc())
                .limit(messages)
            ).mappings()
        ]
    custom = row.pop("attributes") or {}
    consent = {ch: row.pop(f"{ch}_consent") for ch in CHANNELS}
    tags = tags_of_contact(ws, contact_id)
    profile: dict[str, Any] = {
        "contact_id": contact_id,
        "customer_id": row["customer_id"],
        "attributes": {k: v for k, v in row.items() if k != "id"},
        "custom_attributes": custom,
        "consent": consent,
        "tags": tags["tags"],
        "tag_history": tags["history"],
        "segments": ws.segments.of_contact(contact_id),
        "messages": sent,
    }
    hook = _flows_hook()
    if hook is not None:
        profile["flows"] = hook(ws, contact_id)
    return profile


def _flows_hook() -> Any:
    module_name, function = FLOWS_HOOK
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise
    return getattr(module, function, None)
