"""One address, one copy: a flow message is not delivered twice to the same address.

Two contacts can share an address (until ``winback contacts merge`` joins them). A flow's
step then makes a message for each, and without this check the person behind the address
would receive both. A *copy* is a message of the same flow, step, template and channel to
the same normalised address for another contact. :class:`CopyGuard` tells, for the messages
a delivery batch is about to send, which are copies: of a message this batch sends first,
or of one sent or being sent (status ``sent`` or ``sending``) in the last
:data:`COPY_WINDOW`. Messages outside flows (no ``flow``) are not compared, nor are two
messages of one contact (a contact entering a flow again gets its steps again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select

from winback.store.schema import contacts, outbox

#: How far back a message sent to another contact with the address makes a copy.
COPY_WINDOW = timedelta(days=1)
#: What makes two messages copies of each other, besides the address.
Identity = tuple[str, str, str | None, str | None]  # channel, flow, step, template


def identity(row: Mapping[str, Any]) -> Identity | None:
    if not row.get("flow"):
        return None
    return (str(row["channel"]), str(row["flow"]), row.get("step"), row.get("template"))


class CopyGuard:
    """Copies among one delivery batch (see the module docstring)."""

    def __init__(
        self,
        conn: Connection,
        candidates: Iterable[tuple[Mapping[str, Any], str]],
        now: datetime,
    ) -> None:
        """``candidates``: ``(outbox row, normalised address)`` of the batch's messages."""
        self.taken: dict[tuple[Identity, str], set[int]] = {}  # -> the contacts it went to
        wanted: dict[str, set[Identity]] = {}
        batch_ids: list[int] = []
        for row, address in candidates:
            found = identity(row)
            if found is not None and row["channel"] == "email":
                wanted.setdefault(address, set()).add(found)
                batch_ids.append(int(row["id"]))
        if not wanted:
            return
        addresses = sorted(wanted)
        for i in range(0, len(addresses), 500):
            chunk = addresses[i : i + 500]
            sent = conn.execute(
                select(
                    func.lower(func.trim(contacts.c.email)),
                    outbox.c.channel,
                    outbox.c.flow,
                    outbox.c.step,
                    outbox.c.template,
                    outbox.c.contact_id,
                )
                .select_from(outbox.join(contacts, contacts.c.id == outbox.c.contact_id))
                .where(
                    and_(
                        func.lower(func.trim(contacts.c.email)).in_(chunk),
                        outbox.c.channel == "email",
                        outbox.c.status.in_(("sent", "sending")),
                        outbox.c.flow.is_not(None),
                        outbox.c.not_before >= now - COPY_WINDOW,
                        outbox.c.id.not_in(batch_ids),
                    )
                )
            )
            for address, channel, flow, step, template, contact_id in sent:
                key: Identity = (str(channel), str(flow), step, template)
                if key in wanted.get(str(address), set()):
                    self.taken.setdefault((key, str(address)), set()).add(int(contact_id))

    def is_copy(self, row: Mapping[str, Any], address: str) -> bool:
        """Whether ``row`` to ``address`` is a copy; the first of the batch claims it."""
        found = identity(row)
        if found is None or row["channel"] != "email":
            return False
        contact = int(row["contact_id"])
        went_to = self.taken.setdefault((found, address), set())
        if went_to - {contact}:
            return True
        went_to.add(contact)
        return False
