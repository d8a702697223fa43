"""Verifying the API keys of the HTTP service (:mod:`winback.store.apikeys` keeps them).

:class:`KeyRing` caches what it read (SHA-256 -> key name and scope) for :data:`CACHE_SECONDS`, so a
key revoked by another process (``winback api-keys revoke``) stops working within that time,
and at once when revoked through the same :class:`KeyRing`. A key's use is kept in memory and
written to ``api_keys.last_used_at`` by a background flusher every :data:`FLUSH_SECONDS` and
when the ring is closed: the last use shown by ``winback api-keys list`` can be that much
behind. The service holds one ring (``app.state.keyring``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from winback.store.apikeys import VerifiedKey, key_hash, lookup, record_use, revoke

#: How long a verified key is trusted without reading the store again.
CACHE_SECONDS = 5.0
#: How often the recorded use of keys is written to the store.
FLUSH_SECONDS = 10.0

log = logging.getLogger(__name__)


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
        """The key's name when it was verified less than ``cache_seconds`` ago (see
        :meth:`cached_key`)."""
        found = self.cached_key(key)
        return found.name if found is not None else None

    def verify(self, key: str) -> str | None:
        """The name of the (unrevoked) key, or None (see :meth:`verify_key`)."""
        found = self.verify_key(key)
        return found.name if found is not None else None

    def cached_key(self, key: str) -> VerifiedKey | None:
        """The key when it was verified less than ``cache_seconds`` ago (its use is
        recorded), else None; never touches the store."""
        entry = self._cache.get(key_hash(key))
        if entry is None or entry[1] <= self._monotonic():
            return None
        self._use(entry[0])
        return entry[0]

    def verify_key(self, key: str) -> VerifiedKey | None:
        """The (unrevoked) key with its scope, or None; reads the store on a cache miss."""
        found = self.cached_key(key)
        if found is not None:
            return found
        found = lookup(self._engine, key)
        if found is None:
            return None
        self._cache[key_hash(key)] = (found, self._monotonic() + self._cache_seconds)
        self._use(found)
        return found

    def revoke(self, name: str) -> bool:
        """Revoke the key named ``name``: refused at once by this ring, within
        :data:`CACHE_SECONDS` by the others. False when there was no such key."""
        done = revoke(self._engine, name, at=self._now())
        self.forget(name)
        return done

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
