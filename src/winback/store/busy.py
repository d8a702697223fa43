"""A store that cannot take a write now: what the drivers say, what callers get.

Every engine made by :func:`winback.store.engine.make_engine` translates, at one place (its
``handle_error`` event), the driver errors that mean "the store is busy" into
:class:`StoreBusy`:

- SQLite: ``database is locked`` / ``database table is locked`` / ``SQLITE_BUSY``, once the
  busy timeout (``store_busy_timeout``) has run out;
- PostgreSQL: ``lock_not_available`` (55P03, raised when ``lock_timeout``, set to the same
  setting, runs out);
- PostgreSQL deadlocks (40P01) and serialisation failures (40001) become
  :class:`StoreConflict`, a kind of :class:`StoreBusy`: the transaction was rolled back and
  running it again usually succeeds. :func:`retry_transient` does that a few times, with
  jitter, before giving up with :class:`StoreBusy`.

Adapters answer :class:`StoreBusy` with "try again later" (HTTP 503 with ``Retry-After``);
it never means a bug."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

from winback.errors import WinbackError

log = logging.getLogger("winback.store")

T = TypeVar("T")

#: SQLSTATEs of PostgreSQL errors after which the whole transaction can simply run again.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
#: SQLSTATE of a lock wait cut short by ``lock_timeout`` (or ``NOWAIT``).
LOCK_NOT_AVAILABLE = "55P03"
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


class StoreBusy(WinbackError):
    """The store stayed locked past the bounded wait; ``retry_after`` (seconds) is a fair
    delay before trying again."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class StoreConflict(StoreBusy):
    """PostgreSQL rolled the transaction back (deadlock or serialisation failure); running it
    again is the remedy."""


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (psycopg), wrapped by SQLAlchemy or not."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(code) if code else None


def is_busy(exc: BaseException) -> bool:
    """Whether a driver error means the store was locked past the bounded wait."""
    if sqlstate(exc) == LOCK_NOT_AVAILABLE:
        return True
    orig = getattr(exc, "orig", exc)
    if type(orig).__module__.startswith("sqlite3"):
        text = str(orig).lower()
        return any(phrase in text for phrase in _SQLITE_BUSY)
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether a driver error is a deadlock or serialisation failure (run it again)."""
    return sqlstate(exc) in TRANSIENT_SQLSTATES


def classify(exc: BaseException, *, retry_after: int) -> StoreBusy | None:
    """The :class:`StoreBusy` a driver error stands for, or None when it is another error."""
    if isinstance(exc, StoreBusy):
        return exc
    if is_transient(exc):
        conflict = StoreConflict(
            f"the store rolled the transaction back ({_reason(exc)}); try again",
            retry_after=1,
        )
        conflict.__cause__ = exc
        return conflict
    if is_busy(exc):
        busy = StoreBusy(
            f"the store is busy ({_reason(exc)}); try again in {retry_after} s",
            retry_after=retry_after,
        )
        busy.__cause__ = exc
        return busy
    return None


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def retry_after_for(busy_timeout: float) -> int:
    """The ``Retry-After`` given when the store stayed busy for ``busy_timeout`` seconds."""
    return max(1, min(30, math.ceil(busy_timeout)))


def translate_errors(engine: Engine, *, busy_timeout: float) -> None:
    """Make ``engine`` raise :class:`StoreBusy` / :class:`StoreConflict` for the driver errors
    that mean them (every caller benefits, whatever it catches)."""
    retry_after = retry_after_for(busy_timeout)

    def handle(context: ExceptionContext) -> BaseException | None:
        return classify(context.original_exception, retry_after=retry_after)

    event.listen(engine, "handle_error", handle, retval=True)


def retry_transient(
    fn: Callable[[], T],
    *,
    attempts: int = 4,
    base_delay: float = 0.02,
    sleep: Callable[[float], Any] = time.sleep,
) -> T:
    """``fn()``, run again (up to ``attempts`` times in all, after a short random delay that
    grows) while the store rolls it back as a deadlock or serialisation failure. ``fn`` must
    open and commit its own transaction. Once the attempts are spent: :class:`StoreBusy`."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except StoreConflict as exc:
            if attempt == attempts:
                raise StoreBusy(
                    f"{exc} (gave up after {attempts} attempts)", retry_after=1
                ) from exc
            delay = base_delay * (2 ** (attempt - 1)) * (0.5 + random.random())
            log.info(
                "store conflict (%s); attempt %d of %d in %.3f s", exc, attempt, attempts, delay
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
