"""Dashboard sessions on the web side: the signed cookie and a cache of open sessions.

The session cookie holds ``<token>.<signature>``: the token is the random session token of
:mod:`winback.accounts` (the store keeps only its SHA-256), the signature an HMAC-SHA256 of
it under a key derived from the workspace's ``secret_key``. A cookie with a bad signature is
refused without reading the store. The CSRF token of a session is derived from the session
token the same way, so nothing more is stored; the login form, which has no session yet,
uses a signed double-submit cookie (:meth:`SessionSigner.login_nonce`).

:class:`SessionRing` answers "which session is this?" from memory for
:data:`CACHE_SECONDS` after reading the store, and never writes: a sign-out through this
process is seen at once, a sign-out, password change or user removal in another process
(``winback users passwd``) within that time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from winback.accounts import Session, end_session, find_session, token_hash

#: The session cookie's name.
SESSION_COOKIE = "winback_session"
#: The login form's double-submit cookie.
LOGIN_COOKIE = "winback_login"
#: How long a session read from the store is trusted without reading it again.
CACHE_SECONDS = 5.0
#: Most sessions cached at once (the cache is emptied when it would grow beyond).
CACHE_SIZE = 10_000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SessionSigner:
    """Signs and checks session cookies and derives CSRF tokens, with a key derived from
    the workspace's ``secret_key``."""

    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(b"winback-session\x00" + secret_key.encode()).digest()

    def _mac(self, purpose: bytes, value: str) -> str:
        return _b64(hmac.new(self._key, purpose + b"\x00" + value.encode(), "sha256").digest())

    def cookie(self, token: str) -> str:
        """The cookie value of session ``token``."""
        return f"{token}.{self._mac(b'session', token)}"

    def token(self, cookie: str) -> str | None:
        """The session token of a cookie value, or None when its signature is wrong."""
        token, dot, signature = cookie.rpartition(".")
        if not dot or not token or len(cookie) > 200:
            return None
        if not hmac.compare_digest(signature, self._mac(b"session", token)):
            return None
        return token

    def csrf(self, token: str) -> str:
        """The CSRF token of session ``token``."""
        return self._mac(b"csrf", token)

    def login_nonce(self) -> str:
        """A fresh value for the login form's cookie."""
        return secrets.token_urlsafe(24)

    def login_csrf(self, nonce: str) -> str:
        """The login form's CSRF token for the cookie value ``nonce``."""
        return self._mac(b"login", nonce)


class SessionRing:
    """The open sessions, by token: read from the store on a miss, then trusted from memory
    for ``cache_seconds`` (their expiry is checked against the clock every time). Nothing is
    written on a lookup."""

    def __init__(
        self,
        engine: Engine,
        now: Callable[[], datetime],
        *,
        cache_seconds: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._now = now
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[Session | None, float]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> tuple[bool, Session | None]:
        """``(known, session)``: whether the token's answer is in the cache, and the open
        session (None for a token with no open session). Never touches the store."""
        entry = self._cache.get(token_hash(token))
        if entry is None or entry[1] <= self._monotonic():
            return False, None
        session = entry[0]
        if session is not None and session.expires_at <= self._now():
            return True, None
        return True, session

    def lookup(self, token: str) -> Session | None:
        """The open session of ``token`` or None; reads the store on a cache miss."""
        known, session = self.cached(token)
        if known:
            return session
        session = find_session(self._engine, token, at=self._now())
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[token_hash(token)] = (session, self._monotonic() + self._cache_seconds)
        return session

    def end(self, token: str) -> None:
        """End the session of ``token``: refused at once by this ring, within
        ``cache_seconds`` by the others."""
        end_session(self._engine, token)
        with self._lock:
            self._cache.pop(token_hash(token), None)
