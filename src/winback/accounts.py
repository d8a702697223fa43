"""Dashboard users: their names and passwords, their signed-in sessions, and the throttle
that slows down password guessing.

Passwords are hashed with Argon2id (argon2-cffi's defaults, the second recommendation of
RFC 9106); a hash made with weaker parameters is replaced at the next sign-in. A session is
a random token; the store keeps only its SHA-256, with the user and when it expires. A
password change and a user's removal end every session of that user.

:func:`sign_in` checks a name and password under the :class:`LoginThrottle`: each failure
is recorded against the user name and against the client's address; after a few failures
in the throttle's window, each further attempt must wait a delay that doubles with every
failure up to a ceiling, and an attempt made sooner is refused without even looking at the
password (the right password too). Failures leave the window after a while, so nobody is
locked out for longer than the ceiling between two attempts. The failures are kept in the
store, so every process serving one store counts the same, and an attempt is counted before
its password is checked (taken back when it succeeds), so simultaneous guesses cannot all
slip through before the first is counted."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from winback.errors import WinbackError
from winback.store.schema import login_failures, user_sessions, users

#: Shortest password accepted (NIST SP 800-63B asks for at least 8; no composition rules).
MIN_PASSWORD = 12
#: Longest password accepted: long enough for any passphrase or manager-made password,
#: short enough that hashing it costs no more than any other.
MAX_PASSWORD = 1024
#: A user name: 1 to 64 of lowercase letters, digits and ``. _ @ + -`` (so an email address
#: fits), starting with a letter or digit. Names are compared in lowercase.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")

_hasher = PasswordHasher()


class AccountError(WinbackError):
    """A user name or password that cannot be used, or a user that does not exist."""


class UserExists(AccountError):
    """A user with this name exists already."""


class UnknownUser(AccountError):
    """No user with this name."""


def user_name(text: str) -> str:
    """The user name ``text`` stands for (trimmed, lowercase); a clear error when it is not
    a valid name."""
    name = text.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError(
            f"user name {text!r} is not valid: expected 1 to 64 characters, letters, digits "
            "and . _ @ + - only, starting with a letter or digit"
        )
    return name


def check_password(name: str, password: str) -> None:
    """Refuse a password too short, too long, or equal to the user name."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(
            f"the password has {len(password)} characters; at least {MIN_PASSWORD} are needed"
        )
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters")
    if password.strip().lower() == name:
        raise AccountError("the password must not be the user name")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@cache
def _decoy_hash() -> str:
    """A hash to verify against when the user does not exist, so that an unknown name costs
    the same time as a wrong password."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class User:
    id: int
    name: str


def add_user(engine: Engine, name: str, password: str, *, at: datetime) -> User:
    """Create the user ``name`` with ``password``."""
    name = user_name(name)
    check_password(name, password)
    digest = hash_password(password)
    exists = UserExists(f"a user named {name!r} exists; pick another name or use `users passwd`")
    try:
        with engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.name == name)).first():
                raise exists
            user_id = conn.execute(
                insert(users)
                .values(name=name, password_hash=digest, created_at=at, password_changed_at=at)
                .returning(users.c.id)
            ).scalar_one()
    except IntegrityError:  # created by another writer since the check (names are unique)
        raise exists from None
    return User(int(user_id), name)


def set_password(engine: Engine, name: str, password: str, *, at: datetime) -> None:
    """Give the user ``name`` a new password and end all of their sessions."""
    name = user_name(name)
    check_password(name, password)
    digest = hash_password(password)
    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
        if user_id is None:
            raise UnknownUser(f"no user named {name!r} (see `winback users list`)")
        conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=digest, password_changed_at=at)
        )
        conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))


def remove_user(engine: Engine, name: str) -> bool:
    """Remove the user ``name`` and their sessions; False when there was no such user."""
    name = user_name(name)
    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
        if user_id is None:
            return False
        conn.execute(delete(user_sessions).where(user_sessions.c.user_id == user_id))
        conn.execute(delete(users).where(users.c.id == user_id))
    return True


def list_users(engine: Engine, *, at: datetime) -> list[dict[str, object]]:
    """The users by name, with when they were created, last changed their password and last
    signed in, and how many of their sessions are open at ``at``."""
    open_sessions = (
        select(func.count())
        .where(user_sessions.c.user_id == users.c.id, user_sessions.c.expires_at > at)
        .scalar_subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                users.c.name,
                users.c.created_at,
                users.c.password_changed_at,
                users.c.last_login_at,
                open_sessions.label("sessions"),
            ).order_by(users.c.name)
        ).mappings()
        return [dict(r) for r in rows]


def authenticate(engine: Engine, name: str, password: str, *, at: datetime) -> User | None:
    """The user when ``password`` is theirs, else None. An unknown or invalid name takes
    as long as a wrong password. Records the sign-in, and re-hashes a password hashed with
    parameters weaker than today's."""
    try:
        name = user_name(name)
    except AccountError:
        name = ""
    with engine.connect() as conn:
        row = (
            conn.execute(select(users.c.id, users.c.password_hash).where(users.c.name == name))
            .mappings()
            .first()
            if name
            else None
        )
    if row is None or len(password) > MAX_PASSWORD:
        _verify(_decoy_hash(), password[:MAX_PASSWORD])
        return None
    if not _verify(row["password_hash"], password):
        return None
    values: dict[str, object] = {"last_login_at": at}
    if _hasher.check_needs_rehash(row["password_hash"]):
        values["password_hash"] = hash_password(password)
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == row["id"]).values(**values))
    return User(int(row["id"]), name)


# -- sessions ---------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """What the store keeps of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A signed-in session: its user and when it expires."""

    user_id: int
    user: str
    expires_at: datetime


def start_session(engine: Engine, user: User, *, at: datetime, lifetime: timedelta) -> str:
    """Open a session of ``user`` until ``at + lifetime``; returns its token (the only time
    it is available). Expired sessions of every user are deleted on the way."""
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(delete(user_sessions).where(user_sessions.c.expires_at <= at))
        conn.execute(
            insert(user_sessions).values(
                token_hash=token_hash(token),
                user_id=user.id,
                created_at=at,
                expires_at=at + lifetime,
            )
        )
    return token


def find_session(engine: Engine, token: str, *, at: datetime) -> Session | None:
    """The open session of ``token`` at ``at``, or None. Reads only."""
    if not token or len(token) > 200:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(user_sessions.c.user_id, users.c.name, user_sessions.c.expires_at)
            .join(users, users.c.id == user_sessions.c.user_id)
            .where(user_sessions.c.token_hash == token_hash(token))
        ).first()
    if row is None or row.expires_at <= at:
        return None
    return Session(int(row.user_id), str(row.name), row.expires_at)


def end_session(engine: Engine, token: str) -> None:
    """End the session of ``token`` (nothing when there is none)."""
    with engine.begin() as conn:
        conn.execute(delete(user_sessions).where(user_sessions.c.token_hash == token_hash(token)))


# -- throttle ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginThrottle:
    """How failed sign-ins slow down further attempts. Per throttle key (the user name, the
    client's address), with ``n`` failures within ``window``: when ``n >= free_failures``
    the next attempt must wait ``min(first_delay * 2 ** (n - free_failures), max_delay)``
    after the last failure. Attempts refused for being early are not failures."""

    free_failures: int = 5
    window: timedelta = field(default=timedelta(minutes=15))
    first_delay: timedelta = field(default=timedelta(seconds=2))
    max_delay: timedelta = field(default=timedelta(minutes=5))

    def delay(self, failures: int) -> timedelta:
        """The wait after the last of ``failures`` failures."""
        if failures < self.free_failures:
            return timedelta(0)
        grown: timedelta = self.first_delay * 2 ** min(failures - self.free_failures, 30)
        return min(grown, self.max_delay)


def throttle_keys(name: str, address: str | None) -> tuple[str, ...]:
    """The keys a sign-in attempt counts against: the user name (lowercase, as typed, so an
    unknown name counts the same as a known one) and the client's address."""
    keys = ["user:" + name.strip().lower()[:300]]
    if address:
        keys.append("addr:" + address[:300])
    return tuple(keys)


def _wait(
    conn: Connection, keys: tuple[str, ...], at: datetime, throttle: LoginThrottle
) -> timedelta:
    rows = conn.execute(
        select(
            login_failures.c.throttle_key,
            func.count().label("n"),
            func.max(login_failures.c.failed_at).label("last"),
        )
        .where(
            login_failures.c.throttle_key.in_(keys),
            login_failures.c.failed_at > at - throttle.window,
        )
        .group_by(login_failures.c.throttle_key)
    ).all()
    wait = timedelta(0)
    for row in rows:
        wait = max(wait, row.last + throttle.delay(int(row.n)) - at)
    return wait


def throttled_for(
    engine: Engine, keys: tuple[str, ...], *, at: datetime, throttle: LoginThrottle
) -> timedelta:
    """How long an attempt counted against ``keys`` must still wait at ``at`` (zero: it may
    go ahead). Reads only."""
    with engine.connect() as conn:
        return _wait(conn, keys, at, throttle)


def _record(conn: Connection, keys: tuple[str, ...], at: datetime, throttle: LoginThrottle) -> None:
    conn.execute(delete(login_failures).where(login_failures.c.failed_at <= at - throttle.window))
    conn.execute(insert(login_failures), [{"throttle_key": k, "failed_at": at} for k in keys])


def record_failure(
    engine: Engine, keys: tuple[str, ...], *, at: datetime, throttle: LoginThrottle
) -> None:
    """Count a failed sign-in against ``keys``; failures older than the window are deleted."""
    with engine.begin() as conn:
        _record(conn, keys, at, throttle)


def admit(
    engine: Engine, keys: tuple[str, ...], *, at: datetime, throttle: LoginThrottle
) -> timedelta:
    """Let an attempt counted against ``keys`` go ahead, counting it as a failure at once
    (:func:`forgive` takes that back when it succeeds), or answer how long it must wait.
    Checking and counting are one transaction that excludes every other (SQLite: the write
    lock; PostgreSQL: a lock on ``login_failures``), so simultaneous attempts, from one
    process or several, cannot all pass before any of them is counted."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE login_failures IN SHARE ROW EXCLUSIVE MODE"))
        wait = _wait(conn, keys, at, throttle)
        if wait <= timedelta(0):
            _record(conn, keys, at, throttle)
    return wait


def forgive(engine: Engine, keys: tuple[str, ...], *, at: datetime) -> None:
    """After a successful attempt: clear the failures of the user name (``keys[0]``) and
    take back the attempt counted in advance against the other keys (the address)."""
    with engine.begin() as conn:
        conn.execute(delete(login_failures).where(login_failures.c.throttle_key == keys[0]))
        for key in keys[1:]:
            newest = (
                select(login_failures.c.id)
                .where(login_failures.c.throttle_key == key, login_failures.c.failed_at == at)
                .limit(1)
                .scalar_subquery()
            )
            conn.execute(delete(login_failures).where(login_failures.c.id == newest))


@dataclass(frozen=True)
class SignedIn:
    user: User
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class Refused:
    """Wrong name or password (which of the two is not said)."""


@dataclass(frozen=True)
class Throttled:
    """Too many recent failures: try again after ``retry_after``."""

    retry_after: timedelta


def sign_in(
    engine: Engine,
    name: str,
    password: str,
    *,
    address: str | None,
    at: datetime,
    lifetime: timedelta,
    throttle: LoginThrottle,
) -> SignedIn | Refused | Throttled:
    """Check ``name`` and ``password`` from ``address`` under ``throttle`` and, when they
    are right, open a session of ``lifetime``. A success clears the failures counted
    against the user name (not the address's earlier ones)."""
    keys = throttle_keys(name, address)
    wait = admit(engine, keys, at=at, throttle=throttle)
    if wait > timedelta(0):
        return Throttled(wait)
    user = authenticate(engine, name, password, at=at)
    if user is None:
        return Refused()  # counted by admit()
    forgive(engine, keys, at=at)
    token = start_session(engine, user, at=at, lifetime=lifetime)
    return SignedIn(user, token, at + lifetime)
