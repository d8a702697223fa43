"""API keys for the HTTP event API. A key is 32 random bytes (URL-safe text) with a short
prefix; only its SHA-256 is stored (a fast hash is enough for a high-entropy key), so the key
is shown once, at creation.

Verifying a key only reads the store. :class:`KeyRing` caches what it read (SHA-256 -> key
name) for :data:`CACHE_SECONDS`, so a key revoked by another process (``winback api-keys
revoke``) stops working within that time, and at once when revoked through the same
:class:`KeyRing`. A key's use is kept in memory and written to ``api_keys.last_used_at`` by a
background flusher every :data:`FLUSH_SECONDS` and when the ring is closed: the last use shown
by ``winback api-keys list`` can be that much behind."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError

from winback.errors import WinbackError
from winback.store.schema import api_keys

PREFIX = "wbk_"
#: How long a verified key is trusted without reading the store again.
CACHE_SECONDS = 5.0
#: How often the recorded use of keys is written to the store.
FLUSH_SECONDS = 10.0

log = logging.getLogger(__name__)


class ApiKeyExists(WinbackError):
    """An API key with this name exists already."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(engine: Engine, name: str, *, at: datetime) -> str:
    """Create a key named ``name``; returns the key (the only time it is available)."""
    key = PREFIX + secrets.token_urlsafe(32)
    exists = ApiKeyExists(f"an API key named {name!r} exists; pick another name")
    try:
        with engine.begin() as conn:
            if conn.execute(select(api_keys.c.id).where(api_keys.c.name == name)).first():
                raise exists
            conn.execute(
                api_keys.insert().values(
                    name=name, key_hash=_hash(key), prefix=key[:10], created_at=at
                )
            )
    except IntegrityError:  # created by another writer since the check (names are unique)
        raise exists from None
    return key


@dataclass(frozen=True)
class VerifiedKey:
    id: int
    name: str


def lookup(engine: Engine, key: str) -> VerifiedKey | None:
    """The (unrevoked) key, or None. Reads only."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    digest = _hash(key)
    with engine.connect() as conn:
        row = conn.execute(
            select(api_keys.c.id, api_keys.c.name, api_keys.c.key_hash).where(
                and_(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
            )
        ).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return VerifiedKey(int(row.id), str(row.name))


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
                    api_keys.c.created_at,
                    api_keys.c.last_used_at,
                    api_keys.c.revoked_at,
                ).order_by(api_keys.c.name)
            ).mappings()
        ]


class KeyRing:
    """Verifies keys without writing: verified keys are cached (by SHA-256) for
    ``cache_seconds``; each use is kept in memory and flushed every ``flush_seconds`` by a
    background thread (started at the first use), and by :meth:`flush` / :meth:`close`."""

    def __init__(
        self,
        engine: Engine,
        now: Callable[[], datetime],
        *,
        cache_seconds: float = CACHE_SECONDS,
        flush_seconds: float = FLUSH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._now = now
        self._cache_seconds = cache_seconds
        self._flush_seconds = flush_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[VerifiedKey, float]] = {}
        self._used: dict[int, datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def cached(self, key: str) -> str | None:
        """The key's name when it was verified less than ``cache_seconds`` ago (its use is
        recorded), else None; never touches the store."""
        entry = self._cache.get(_hash(key))
        if entry is None or entry[1] <= self._monotonic():
            return None
        self._use(entry[0])
        return entry[0].name

    def verify(self, key: str) -> str | None:
        """The name of the (unrevoked) key, or None; reads the store on a cache miss."""
        name = self.cached(key)
        if name is not None:
            return name
        found = lookup(self._engine, key)
        if found is None:
            return None
        self._cache[_hash(key)] = (found, self._monotonic() + self._cache_seconds)
        self._use(found)
        return found.name

    def forget(self, name: str) -> None:
        """Drop the cached key named ``name`` (revoked in this process: refused at once)."""
        for digest, (found, _) in list(self._cache.items()):
            if found.name == name:
                self._cache.pop(digest, None)

    def _use(self, found: VerifiedKey) -> None:
        at = self._now()
        with self._lock:
            self._used[found.id] = at
            if self._flusher is None and not self._stop.is_set():
                self._flusher = threading.Thread(
                    target=self._flush_forever, name="winback-api-key-use", daemon=True
                )
                self._flusher.start()

    def pending(self) -> dict[int, datetime]:
        """Uses not yet written (key id -> last use)."""
        with self._lock:
            return dict(self._used)

    def flush(self) -> None:
        """Write the recorded uses; on failure they are kept for the next flush."""
        with self._lock:
            used, self._used = self._used, {}
        try:
            record_use(self._engine, used)
        except Exception:
            with self._lock:
                for key_id, at in used.items():
                    if key_id not in self._used or self._used[key_id] < at:
                        self._used[key_id] = at
            raise

    def _flush_forever(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            try:
                self.flush()
            except Exception:
                log.warning("could not record API key use (retried later)", exc_info=True)

    def close(self) -> None:
        """Stop the flusher and write what is pending; the ring stays usable (a later use
        starts a new flusher)."""
        with self._lock:
            flusher, self._flusher = self._flusher, None
            self._stop.set()
        if flusher is not None:
            flusher.join()
        with self._lock:
            self._stop = threading.Event()
        try:
            self.flush()
        except Exception:
            log.warning("could not record API key use at close", exc_info=True)
