"""API keys of the HTTP service, as the store keeps them. A key is 32 random bytes (URL-safe
text) with a short prefix; only its SHA-256 is stored (a fast hash is enough for a
high-entropy key), so the key is shown once, at creation. Each key has one :class:`Scope`.
The web layer verifies keys through a cache (:class:`winback.web.apikeys.KeyRing`);
``winback api-keys`` manages them here."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, and_, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError

from winback.errors import WinbackError
from winback.store.schema import api_keys

PREFIX = "wbk_"


class Scope(StrEnum):
    """What an API key may do. A signed-in dashboard user has every scope."""

    EVENTS = "events"  # the event API and provider reports
    READ = "read"  # read through the management API and the dashboard's pages
    MANAGE = "manage"  # change through the management API (implies read)


#: What each scope grants, the scope itself included. ``manage`` implies ``read`` (a change
#: needs to see what it changes) but not ``events``: a key that feeds events from the shop
#: and a key that administers flows are different jobs, kept apart.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.EVENTS: frozenset({Scope.EVENTS}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.MANAGE: frozenset({Scope.READ, Scope.MANAGE}),
}


def parse_scope(text: str) -> Scope:
    """The scope named ``text``; a clear error otherwise."""
    try:
        return Scope(text.strip().lower())
    except ValueError:
        expected = ", ".join(s.value for s in Scope)
        raise WinbackError(
            f"unknown API key scope {text!r} (expected one of: {expected})"
        ) from None


class ApiKeyExists(WinbackError):
    """An API key with this name exists already."""


def key_hash(key: str) -> str:
    """What the store keeps of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def create(engine: Engine, name: str, *, at: datetime, scope: Scope = Scope.EVENTS) -> str:
    """Create a key named ``name`` with ``scope``; returns the key (the only time it is
    available)."""
    key = PREFIX + secrets.token_urlsafe(32)
    exists = ApiKeyExists(f"an API key named {name!r} exists; pick another name")
    try:
        with engine.begin() as conn:
            if conn.execute(select(api_keys.c.id).where(api_keys.c.name == name)).first():
                raise exists
            conn.execute(
                api_keys.insert().values(
                    name=name,
                    key_hash=key_hash(key),
                    prefix=key[:10],
                    created_at=at,
                    scope=scope.value,
                )
            )
    except IntegrityError:  # created by another writer since the check (names are unique)
        raise exists from None
    return key


@dataclass(frozen=True)
class VerifiedKey:
    id: int
    name: str
    scope: Scope

    @property
    def scopes(self) -> frozenset[Scope]:
        """What the key may do (its scope and what that implies)."""
        return GRANTS[self.scope]


def lookup(engine: Engine, key: str) -> VerifiedKey | None:
    """The (unrevoked) key, or None. Reads only."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    digest = key_hash(key)
    with engine.connect() as conn:
        row = conn.execute(
            select(api_keys.c.id, api_keys.c.name, api_keys.c.key_hash, api_keys.c.scope).where(
                and_(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
            )
        ).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return VerifiedKey(int(row.id), str(row.name), Scope(row.scope))


def record_use(engine: Engine, used: dict[int, datetime]) -> None:
    """Move ``last_used_at`` of the keys forward to the given times (never backward), in one
    transaction."""
    if not used:
        return
    with engine.begin() as conn:
        conn.execute(
            update(api_keys)
            .where(
                and_(
                    api_keys.c.id == bindparam("_id"),
                    or_(
                        api_keys.c.last_used_at.is_(None),
                        api_keys.c.last_used_at < bindparam("_at"),
                    ),
                )
            )
            .values(last_used_at=bindparam("_at")),
            [{"_id": key_id, "_at": at} for key_id, at in used.items()],
        )


def revoke(engine: Engine, name: str, *, at: datetime) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            update(api_keys)
            .where(and_(api_keys.c.name == name, api_keys.c.revoked_at.is_(None)))
            .values(revoked_at=at)
        )
    return bool(result.rowcount)


def list_keys(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(
                    api_keys.c.name,
                    api_keys.c.prefix,
                    api_keys.c.scope,
                    api_keys.c.created_at,
                    api_keys.c.last_used_at,
                    api_keys.c.revoked_at,
                ).order_by(api_keys.c.name)
            ).mappings()
        ]
