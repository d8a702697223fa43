"""What the engine loop is doing, for ``GET /healthz`` and the logs: an :class:`EngineStatus`
the loop updates (thread-safe) and whose :meth:`~EngineStatus.snapshot` says whether the
engine is healthy.

States: ``running`` (the last pass succeeded, or none has ended yet), ``failing`` (the last
pass failed; the loop backs off and retries), ``stopped`` (the loop ended, or its thread
died, while it should run) and ``disabled`` (no engine in this process: ``winback serve
--no-background``). The engine is *unhealthy* when it is stopped, when
:data:`FAILURES_UNHEALTHY` passes in a row failed, or when no pass succeeded for
``stale_after`` seconds since the loop started (a stuck pass as much as a failing one).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from winback.clock import Clock, SystemClock

State = Literal["running", "failing", "stopped", "disabled"]

#: Consecutive failed passes after which the engine is unhealthy.
FAILURES_UNHEALTHY = 3


@dataclass(frozen=True)
class PassError:
    type: str
    message: str
    at: datetime


@dataclass(frozen=True)
class EngineSnapshot:
    state: State
    healthy: bool
    problem: str | None  # why it is unhealthy
    passes: int  # successful passes
    failures: int  # failed passes, in all
    consecutive_failures: int
    started_at: datetime | None
    last_success_at: datetime | None
    last_error: PassError | None
    interval_seconds: float
    stale_after_seconds: float


class EngineStatus:
    """Updated by the engine loop, read by the health check (any thread)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        interval: float = 30.0,
        stale_after: float = 900.0,
        enabled: bool = True,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.interval = interval
        #: No successful pass for this long: unhealthy (at least three intervals).
        self.stale_after = max(stale_after, 3 * interval)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state: State = "running" if enabled else "disabled"
        self._passes = 0
        self._failures = 0
        self._consecutive = 0
        self._started_at: datetime | None = None
        self._last_success_at: datetime | None = None
        self._last_error: PassError | None = None

    def watch(self, thread: threading.Thread) -> None:
        """The thread running the loop: if it dies, the engine is ``stopped``."""
        with self._lock:
            self._thread = thread

    def started(self) -> None:
        with self._lock:
            self._state = "running"
            self._started_at = self.clock.now()

    def succeeded(self) -> int:
        """Record a successful pass; returns the failures in a row it ended."""
        with self._lock:
            ended = self._consecutive
            self._state = "running"
            self._passes += 1
            self._consecutive = 0
            self._last_success_at = self.clock.now()
            return ended

    def failed(self, exc: BaseException) -> int:
        """Record a failed pass; returns the failures in a row."""
        with self._lock:
            self._state = "failing"
            self._failures += 1
            self._consecutive += 1
            self._last_error = PassError(type(exc).__name__, str(exc), self.clock.now())
            return self._consecutive

    def stopped(self) -> None:
        with self._lock:
            self._state = "stopped"

    def snapshot(self) -> EngineSnapshot:
        with self._lock:
            state = self._state
            if self.enabled and self._thread is not None and not self._thread.is_alive():
                state = "stopped"
            problem = self._problem(state)
            return EngineSnapshot(
                state=state,
                healthy=problem is None,
                problem=problem,
                passes=self._passes,
                failures=self._failures,
                consecutive_failures=self._consecutive,
                started_at=self._started_at,
                last_success_at=self._last_success_at,
                last_error=self._last_error,
                interval_seconds=self.interval,
                stale_after_seconds=self.stale_after,
            )

    def _problem(self, state: State) -> str | None:
        if state == "disabled":
            return None
        if state == "stopped":
            return "the engine loop is stopped"
        if self._consecutive >= FAILURES_UNHEALTHY:
            return f"the last {self._consecutive} engine passes failed"
        since = self._last_success_at or self._started_at
        if since is not None and self.clock.now() - since > timedelta(seconds=self.stale_after):
            return f"no successful engine pass for more than {self.stale_after:g} s"
        return None
