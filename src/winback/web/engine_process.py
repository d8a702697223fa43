"""The flow engine's loop in a child process of ``winback serve``, supervised by the server.

The HTTP server and the engine's passes both need the CPU. In one process they share
Python's interpreter lock: a pass's Python work (segment refresh, enrolment, rendering)
holds up the requests being answered. In a child process of its own the engine runs beside
the server; the operating system shares the cores, and the child runs at a lower priority
(``nice`` :data:`NICE`) so that requests come first when the machine is busy.

The child opens the workspace again (same folder, same settings and environment), runs
:func:`winback.flows.runner.run_forever`, and applies the event journal the server appends
to (:mod:`winback.delivery.event_intake`), so that neither the engine's nor the applier's
Python work holds up requests. It reports each change of its state (pass started,
succeeded, failed with its cause, loop stopped) over a pipe; the server's supervisor thread
mirrors them into the :class:`~winback.flows.status.EngineStatus` that ``GET /healthz``
reports. If the child dies (killed, crashed), that is a failed pass: the supervisor starts
a new child after the loop's usual backoff. Stopping (SIGTERM to the server) asks the child
to finish its slice and exit; the child also exits on its own when the server is gone (its
end of the pipe closes).

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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

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


def _child(folder: str, interval: float, pipe: Connection, nice: int) -> None:
    """The child's main: the engine loop until the server asks it to stop or goes away."""
    import winback
    from winback.flows.runner import log_pass, run_forever

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if nice:
        os.nice(nice)
    sys.setswitchinterval(SWITCH_INTERVAL)
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

    threading.Thread(target=listen, name="winback-engine-pipe", daemon=True).start()
    ws = winback.open(Path(folder))
    # The event journal is applied here, beside the engine, not in the server's process.
    ws.delivery.event_intake.start(idle=APPLY_POLL_SECONDS)
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


class _ChildExited(Exception):
    """The engine's process ended while it should run."""


class EngineProcess:
    """Runs and supervises the engine's child process; ``status`` mirrors its state."""

    def __init__(
        self, folder: Path, status: EngineStatus, *, interval: float = 30.0, nice: int = NICE
    ) -> None:
        self.folder = folder
        self.status = status
        self.interval = interval
        self.nice = nice
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

    def start(self) -> threading.Thread:
        """Start the child and its supervisor thread (returned: the status watches it)."""
        self._supervisor = threading.Thread(
            target=self._supervise, name="winback-engine-supervisor", daemon=True
        )
        self._supervisor.start()
        return self._supervisor

    def _spawn(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_child,
            args=(str(self.folder), self.interval, theirs, self.nice),
            name="winback-engine",
            daemon=False,
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
            error = _ChildExited(f"the engine's process exited with code {process.exitcode}")
            failures = self.status.failed(error)
            log.error("%s (%d in a row); starting it again in %.1f s", error, failures, delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, max(self.interval, FIRST_RESTART_SECONDS))
        self.status.stopped()

    def _relay(self, pipe: Connection) -> None:
        """Mirror the child's reports into the status until the child's end closes."""
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "started":
                self.status.started()
            elif kind == "succeeded":
                self.status.succeeded()
            elif kind == "failed":
                self.status.failed(_reported(str(message[1]), str(message[2])))
            elif kind == "stopped" and not self._stop.is_set():
                continue  # the child is ending; the supervisor sees it exit

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the child to finish its slice and exit; killed after ``timeout`` seconds."""
        with self._lock:
            self._stop.set()
            process, pipe = self._process, self._pipe
        if process is not None and pipe is not None:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
            process.join(timeout)
            if process.is_alive():
                log.warning("the engine's process did not stop within %g s; killing it", timeout)
                process.kill()
                process.join(10)
        if self._supervisor is not None:
            self._supervisor.join(timeout)


def _reported(kind: str, message: str) -> Exception:
    """An exception standing for one the child reported (its type's name and message)."""
    reported: type[Exception] = type(kind, (Exception,), {})
    return reported(message)
