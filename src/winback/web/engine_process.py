"""The flow engine's loop and the event journal's applier, each in a child process of
``winback serve``, supervised by the server.

The HTTP server and the engine's passes both need the CPU. In one process they share
Python's interpreter lock: a pass's Python work (segment refresh, enrolment, rendering)
holds up the requests being answered. In a child process of its own the engine runs beside
the server; the operating system shares the cores, and the child runs at a lower priority
(``nice`` :data:`NICE`) so that requests come first when the machine is busy.

The engine's child opens the workspace again (same folder, same settings and environment)
and runs :func:`winback.flows.runner.run_forever`. It reports each change of its state
(pass started, succeeded, failed with its cause, loop stopped) over a pipe; the server's
supervisor thread mirrors them into the :class:`~winback.flows.status.EngineStatus` that
``GET /healthz`` reports. If the child dies (killed, crashed), that is a failed pass: the
supervisor starts a new child after the loop's usual backoff.

The applier's child (:class:`ApplierProcess`) writes the events the server appends to the
event journal into the store (:mod:`winback.delivery.event_intake`). It has a process of
its own, at the server's priority, whether the engine runs or not: its work is mostly
SQLite's, which would otherwise share one core with the server's request handling (one
interpreter lock) or, in the engine's process, wait behind a pass at the engine's lower
priority; in a process of its own it keeps up with what the API accepts. A child that dies
is logged and started again (:class:`ApplierStatus`, also in ``GET /healthz``); its
entries stay in the journal meanwhile.

Stopping (SIGTERM to the server) asks each child to finish its slice and exit (the
applier first applies what the journal holds, for a bounded time); a child also exits on
its own when the server is gone (its end of the pipe closes).

Writers of the two processes meet at the store's lock: on SQLite the engine's slices pause
between them so that the server's writers (one-click unsubscribes, clicks, the event
journal's applier) get the store (:mod:`winback.store.slices`)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from winback.flows.status import EngineStatus

log = logging.getLogger("winback.engine")

#: Niceness added to the engine's process: under load, requests come first.
NICE = 10
#: Seconds of Python's thread switch interval in the engine's process (5 ms by default).
#: Two threads take turns at the interpreter lock there: the engine's pass (Python work:
#: enrolment, rendering) and the event journal's applier, whose time goes mostly to SQLite
#: calls that let the interpreter lock go. After each call the applier waits for it again,
#: up to the switch interval, while it holds the store's write lock; a shorter interval
#: keeps its slices, and so the waits of every other writer, short.
SWITCH_INTERVAL = 0.001
#: Seconds between two looks of the engine process's applier at an idle event journal (the
#: server appends to it; nothing wakes this process).
APPLY_POLL_SECONDS = 0.1
#: Seconds the supervisor waits before starting a new child after one died (doubling, capped
#: at the pass interval).
FIRST_RESTART_SECONDS = 1.0


class ReportingStatus(EngineStatus):
    """The child's status: as :class:`EngineStatus`, each change also sent to the server."""

    def __init__(self, pipe: Connection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pipe = pipe
        self._send_lock = threading.Lock()

    def _send(self, *message: object) -> None:
        with self._send_lock:
            try:
                self._pipe.send(message)
            except OSError:
                pass  # the server is gone; the child stops on its own

    def started(self) -> None:
        super().started()
        self._send("started")

    def succeeded(self) -> int:
        ended = super().succeeded()
        self._send("succeeded")
        return ended

    def failed(self, exc: BaseException) -> int:
        failures = super().failed(exc)
        self._send("failed", type(exc).__name__, str(exc))
        return failures

    def stopped(self) -> None:
        super().stopped()
        self._send("stopped")


def _prepare_child(pipe: Connection, nice: int, name: str) -> threading.Event:
    """What every child does first: its name (``ps``, ``top``; where the system allows),
    signals, priority, logging, and a thread that sets the returned event when the server
    asks it to stop or goes away."""
    try:
        Path("/proc/self/comm").write_text(name[:15])
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if nice:
        os.nice(nice)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("winback").setLevel(logging.INFO)

    def listen() -> None:
        try:
            pipe.recv()  # "stop", or EOF when the server is gone
        except (EOFError, OSError):
            pass
        stop.set()

    threading.Thread(target=listen, name="winback-child-pipe", daemon=True).start()
    return stop


def _engine_child(folder: str, interval: float, pipe: Connection, nice: int) -> None:
    """The engine child's main: the engine loop until the server asks it to stop or goes
    away. The event journal is applied by the applier's process, not here."""
    import winback
    from winback.flows.runner import log_pass, run_forever

    stop = _prepare_child(pipe, nice, EngineProcess.name)
    sys.setswitchinterval(SWITCH_INTERVAL)
    ws = winback.open(Path(folder))
    ws.delivery.event_intake.applies_here = False
    try:
        status = ReportingStatus(
            pipe,
            clock=ws.clock,
            interval=interval,
            stale_after=ws.settings.engine_stale_seconds,
        )
        run_forever(ws, stop, interval=interval, status=status, on_pass=log_pass)
    finally:
        ws.close()


def _applier_child(folder: str, pipe: Connection, nice: int) -> None:
    """The applier child's main: apply the event journal (what it holds, then what the
    server appends) until the server asks it to stop or goes away; then apply what is left
    for up to :data:`~winback.delivery.event_intake.DRAIN_SECONDS` (the rest stays in the
    journal for the next start)."""
    import winback

    stop = _prepare_child(pipe, nice, ApplierProcess.name)
    ws = winback.open(Path(folder))
    try:
        ws.delivery.event_intake.start(idle=APPLY_POLL_SECONDS)
        _send(pipe, "started")
        stop.wait()
    finally:
        ws.close()  # stops the applier thread, then drains the journal


def _send(pipe: Connection, *message: object) -> None:
    try:
        pipe.send(message)
    except OSError:
        pass  # the server is gone; the child stops on its own


class _ChildExited(Exception):
    """A child process ended while it should run."""


class SupervisedChild:
    """Runs one child process and starts it again when it dies (after a backoff that
    doubles from :data:`FIRST_RESTART_SECONDS` up to ``restart_cap``), until :meth:`stop`."""

    #: The child process's name (``ps``, logs).
    name = "winback-child"

    def __init__(self, folder: Path, *, nice: int, restart_cap: float) -> None:
        self.folder = folder
        self.nice = nice
        self.restart_cap = restart_cap
        self._stop = threading.Event()
        self._pipe: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        #: Children started so far (1 unless one died), for tests.
        self.starts = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def _target(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """The child's main and its arguments before the pipe and the niceness."""
        raise NotImplementedError

    def _received(self, message: tuple[Any, ...]) -> None:
        """A report of the child's (a tuple whose first item is its kind)."""

    def _exited(self, error: Exception) -> int:
        """The child died while it should run; returns the failures in a row."""
        raise NotImplementedError

    def _ended(self) -> None:
        """The supervisor stops: no child runs any more."""

    def start(self) -> threading.Thread:
        """Start the child and its supervisor thread (returned)."""
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"{self.name}-supervisor", daemon=True
        )
        self._supervisor.start()
        return self._supervisor

    def _spawn(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        target, args = self._target()
        process = context.Process(
            target=target, args=(*args, theirs, self.nice), name=self.name, daemon=False
        )
        process.start()
        theirs.close()
        self.starts += 1
        return process, ours

    def _supervise(self) -> None:
        delay = FIRST_RESTART_SECONDS
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    break
                self._process, self._pipe = self._spawn()
            process, pipe = self._process, self._pipe
            self._relay(pipe)
            process.join()
            pipe.close()
            if self._stop.is_set():
                break
            error = _ChildExited(f"the {self.name} process exited with code {process.exitcode}")
            failures = self._exited(error)
            log.error("%s (%d in a row); starting it again in %.1f s", error, failures, delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, max(self.restart_cap, FIRST_RESTART_SECONDS))
        self._ended()

    def _relay(self, pipe: Connection) -> None:
        """Hand the child's reports to :meth:`_received` until the child's end closes."""
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                return
            self._received(message)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the child to finish its slice and exit; killed after ``timeout`` seconds. Only
        the supervisor thread waits for the child's exit (two threads waiting for one
        process race for its exit status), so this waits for the supervisor."""
        with self._lock:
            self._stop.set()
            process, pipe = self._process, self._pipe
        if pipe is not None:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        supervisor = self._supervisor
        if supervisor is None:
            return
        supervisor.join(timeout)
        if supervisor.is_alive() and process is not None:
            log.warning("the %s process did not stop within %g s; killing it", self.name, timeout)
            process.kill()
            supervisor.join(10)


class EngineProcess(SupervisedChild):
    """Runs and supervises the engine's child process; ``status`` mirrors its state."""

    name = "winback-engine"

    def __init__(
        self, folder: Path, status: EngineStatus, *, interval: float = 30.0, nice: int = NICE
    ) -> None:
        super().__init__(folder, nice=nice, restart_cap=interval)
        self.status = status
        self.interval = interval

    def _target(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return _engine_child, (str(self.folder), self.interval)

    def _received(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "started":
            self.status.started()
        elif kind == "succeeded":
            self.status.succeeded()
        elif kind == "failed":
            self.status.failed(_reported(str(message[1]), str(message[2])))

    def _exited(self, error: Exception) -> int:
        return self.status.failed(error)

    def _ended(self) -> None:
        self.status.stopped()


#: Failures in a row of the applier's process after which ``GET /healthz`` says unhealthy.
APPLIER_UNHEALTHY_AFTER = 3


@dataclass(slots=True)
class ApplierStatus:
    """Where the event journal is applied, as ``GET /healthz`` reports it: ``process``
    (a child of the server) or ``thread`` (a thread of the server)."""

    where: Literal["process", "thread"] = "thread"
    running: bool = True
    starts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures < APPLIER_UNHEALTHY_AFTER


class ApplierProcess(SupervisedChild):
    """Runs and supervises the event journal applier's child process."""

    name = "winback-applier"

    def __init__(
        self,
        folder: Path,
        status: ApplierStatus,
        *,
        now: Callable[[], datetime],
        nice: int = 0,
        restart_cap: float = 30.0,
    ) -> None:
        super().__init__(folder, nice=nice, restart_cap=restart_cap)
        self.status = status
        self._now = now
        status.where, status.running = "process", False

    def _target(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return _applier_child, (str(self.folder),)

    def _received(self, message: tuple[Any, ...]) -> None:
        if message[0] == "started":
            self.status.running = True
            self.status.starts += 1
            self.status.consecutive_failures = 0

    def _exited(self, error: Exception) -> int:
        self.status.running = False
        self.status.consecutive_failures += 1
        self.status.last_error, self.status.last_error_at = str(error), self._now()
        return self.status.consecutive_failures

    def _ended(self) -> None:
        self.status.running = False


def _reported(kind: str, message: str) -> Exception:
    """An exception standing for one the child reported (its type's name and message)."""
    reported: type[Exception] = type(kind, (Exception,), {})
    return reported(message)
