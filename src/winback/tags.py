"""Tags: labels set by people, imports and flows, with history (``tag_history``).

Flows react to tag changes through ``tag_history`` (one row per addition or removal)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from winback.clock import Clock
from winback.errors import NotFound, WinbackError
from winback.segments.service import Segments
from winback.store.repository import Store
from winback.store.schema import contact_tags, contacts, tag_history


class NoContactsChosen(WinbackError):
    """A tag command named neither contacts nor a segment."""


@dataclass(frozen=True)
class TagChange:
    tag: str
    action: str  # 'added' | 'removed'
    requested: int  # contacts asked for
    changed: list[int]  # those whose tags actually changed


def resolve_contacts(engine: Engine, refs: Sequence[str]) -> list[int]:
    """Internal ids of contacts named by their shop ``customer_id``, their email address
    (case-insensitive; the oldest contact when several share it) or ``#ID`` for the internal
    id. Raises :class:`NotFound` naming the unknown ones."""
    wanted = [r for r in dict.fromkeys(refs)]
    internal = {r: int(r[1:]) for r in wanted if r.startswith("#") and r[1:].isdigit()}
    external = [r for r in wanted if r not in internal]
    found: dict[str, int] = {}
    with engine.connect() as conn:
        for i in range(0, len(external), 900):
            chunk = external[i : i + 900]
            for cid, iid in conn.execute(
                select(contacts.c.customer_id, contacts.c.id).where(
                    contacts.c.customer_id.in_(chunk)
                )
            ):
                found[cid] = int(iid)
        ids = list(internal.values())
        for i in range(0, len(ids), 900):
            chunk_ids = ids[i : i + 900]
            known = set(
                conn.execute(select(contacts.c.id).where(contacts.c.id.in_(chunk_ids))).scalars()
            )
            for ref, iid in internal.items():
                if iid in known:
                    found[ref] = iid
        by_address = [r.strip().lower() for r in wanted if r not in found and "@" in r]
        for i in range(0, len(by_address), 900):
            chunk = by_address[i : i + 900]
            for address, iid in conn.execute(  # the oldest contact with the address
                select(contacts.c.email, contacts.c.id)
                .where(contacts.c.email.in_(chunk))
                .order_by(contacts.c.id.desc())
            ):
                found.update({r: int(iid) for r in wanted if r.strip().lower() == address})
    missing = [r for r in wanted if r not in found]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise NotFound(f"no contact with customer_id {shown}{more}")
    return [found[r] for r in wanted]


class Tags:
    """Adds and removes tags on contacts named by ``customer_id`` or by segment, at the
    clock's now, with history; counts them."""

    def __init__(self, engine: Engine, store: Store, segments: Segments, clock: Clock) -> None:
        self.engine = engine
        self.store = store
        self.segments = segments
        self.clock = clock

    def add(
        self,
        tag: str,
        *,
        contact_refs: Sequence[str] = (),
        segment: str | None = None,
        source: str = "cli",
    ) -> TagChange:
        """Tag the named contacts and/or the current members of a segment."""
        tag = _check(tag)
        ids = self._targets(contact_refs, segment)
        changed = self.store.add_tag(ids, tag, at=self.clock.now(), source=source)
        return TagChange(tag, "added", len(ids), changed)

    def remove(
        self,
        tag: str,
        *,
        contact_refs: Sequence[str] = (),
        segment: str | None = None,
        source: str = "cli",
    ) -> TagChange:
        tag = _check(tag)
        ids = self._targets(contact_refs, segment)
        changed = self.store.remove_tag(ids, tag, at=self.clock.now(), source=source)
        return TagChange(tag, "removed", len(ids), changed)

    def counts(self) -> list[dict[str, Any]]:
        """Every tag in use with its number of contacts and last change."""
        return tag_counts(self.engine)

    def of_contact(self, contact_id: int) -> dict[str, list[dict[str, Any]]]:
        """The contact's tags (with when and by whom) and its full tag history."""
        return tags_of_contact(self.engine, contact_id)

    def _targets(self, contact_refs: Sequence[str], segment: str | None) -> list[int]:
        ids = resolve_contacts(self.engine, contact_refs) if contact_refs else []
        if segment is not None:
            ids.extend(m["contact_id"] for m in self.segments.iter_members(segment))
        if not contact_refs and segment is None:
            raise NoContactsChosen("name contacts (--contact ID) or a segment (--segment NAME)")
        return list(dict.fromkeys(ids))


def _check(tag: str) -> str:
    tag = tag.strip()
    if not tag or len(tag) > 128:
        raise WinbackError(f"a tag is 1 to 128 characters, got {tag!r}")
    return tag


def tag_counts(engine: Engine) -> list[dict[str, Any]]:
    """Every tag in use with its number of contacts and last change."""
    # The last change of each tag in use is one seek in ix_tag_history_tag_at (tag, at),
    # not a pass over the whole history.
    h = tag_history.alias("h")
    last = select(func.max(h.c.at)).where(h.c.tag == contact_tags.c.tag).scalar_subquery()
    with engine.connect() as conn:
        rows = conn.execute(
            select(contact_tags.c.tag, func.count().label("contacts"), last.label("last_change"))
            .group_by(contact_tags.c.tag)
            .order_by(contact_tags.c.tag)
        ).all()
    return [{"tag": t, "contacts": n, "last_change": at} for t, n, at in rows]


def tags_of_contact(engine: Engine, contact_id: int) -> dict[str, list[dict[str, Any]]]:
    """The contact's tags (with when and by whom) and its full tag history."""
    with engine.connect() as conn:
        current = [
            dict(r)
            for r in conn.execute(
                select(contact_tags.c.tag, contact_tags.c.added_at, contact_tags.c.added_by)
                .where(contact_tags.c.contact_id == contact_id)
                .order_by(contact_tags.c.tag)
            ).mappings()
        ]
        history = [
            dict(r)
            for r in conn.execute(
                select(
                    tag_history.c.tag, tag_history.c.action, tag_history.c.at, tag_history.c.source
                )
                .where(tag_history.c.contact_id == contact_id)
                .order_by(tag_history.c.at, tag_history.c.id)
            ).mappings()
        ]
    return {"tags": current, "history": history}
