"""Work a dashboard form starts and that must not run inside the request (the analysis, a
snapshot of the base): one background thread per named job, at most one at a time, with its
last outcome kept for the page to show."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import Request

from winback.clock import Clock

log = logging.getLogger("winback.dashboard")


@dataclass
class JobState:
    """A job's last run: when it started and ended, and its error if it failed."""

    running: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None


class Jobs:
    """The named background jobs of one app (``app.state.jobs``)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, JobState] = {}
        self._threads: dict[str, threading.Thread] = {}

    def state(self, name: str) -> JobState:
        with self._lock:
            found = self._states.get(name)
            return JobState(**vars(found)) if found is not None else JobState()

    def start(self, name: str, work: Callable[[], object]) -> bool:
        """Run ``work`` in a thread unless the job is running already; whether it started."""
        with self._lock:
            state = self._states.setdefault(name, JobState())
            if state.running:
                return False
            state.running, state.started_at = True, self.clock.now()
            state.ended_at, state.error = None, None

        def run() -> None:
            error: str | None = None
            try:
                work()
            except Exception as exc:  # reported on the page, logged with its traceback
                log.exception("dashboard job %s failed", name)
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                state.running, state.ended_at, state.error = False, self.clock.now(), error

        thread = threading.Thread(target=run, name=f"winback-dashboard-{name}", daemon=True)
        self._threads[name] = thread
        thread.start()
        return True

    def join(self, name: str, timeout: float | None = None) -> None:
        """Wait for the job's thread (tests, shutdown)."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout)


def jobs_of(request: Request) -> Jobs:
    """The app's jobs, made on first use."""
    state = request.app.state
    found: Jobs | None = getattr(state, "dashboard_jobs", None)
    if found is None:
        found = Jobs(state.workspace.clock)
        state.dashboard_jobs = found
    return found
