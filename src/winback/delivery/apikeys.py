"""API keys for the HTTP event API. A key is 32 random bytes (URL-safe text) with a short
prefix; only its SHA-256 is stored (a fast hash is enough for a high-entropy key), so the key
is shown once, at creation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import Engine, and_, select, update

from winback.errors import WinbackError
from winback.store.schema import api_keys

PREFIX = "wbk_"


class ApiKeyExists(WinbackError):
    """An API key with this name exists already."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(engine: Engine, name: str, *, at: datetime) -> str:
    """Create a key named ``name``; returns the key (the only time it is available)."""
    key = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(select(api_keys.c.id).where(api_keys.c.name == name)).first():
            raise ApiKeyExists(f"an API key named {name!r} exists; pick another name")
        conn.execute(
            api_keys.insert().values(name=name, key_hash=_hash(key), prefix=key[:10], created_at=at)
        )
    return key


def verify(engine: Engine, key: str, *, at: datetime) -> str | None:
    """The name of the (unrevoked) key, or None."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    digest = _hash(key)
    with engine.begin() as conn:
        row = conn.execute(
            select(api_keys.c.id, api_keys.c.name, api_keys.c.key_hash).where(
                and_(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
            )
        ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=at))
    return str(row.name)


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
                    api_keys.c.created_at,
                    api_keys.c.last_used_at,
                    api_keys.c.revoked_at,
                ).order_by(api_keys.c.name)
            ).mappings()
        ]
