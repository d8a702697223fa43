"""The engine loop never stops on a failing pass: it logs it, backs off and retries, and
``GET /healthz`` reports it (503 when stopped, failing repeatedly or stuck). `winback run`
and `winback serve` stop cleanly on SIGTERM; one-shot commands retry transient failures for
a bounded time and exit non-zero on configuration errors."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from tests.conftest import T0
from tests.delivery_support import free_port
from tests.flows.helpers import add_order, make_contacts
from tests.web_support import running_service
from winback.cli import app
from winback.clock import FixedClock
from winback.flows.engine import TickReport
from winback.flows.service import Flows
from winback.flows.status import EngineStatus
from winback.web.app import create_app
from winback.workspace import Workspace

DAY = timedelta(days=1)
runner = CliRunner()
WINBACK = [sys.executable, "-c", "from winback.cli import main; main()"]


def _health(base: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{base}/healthz", timeout=10)
    return response.status_code, response.json()


def _until(
    base: str, condition: Callable[[int, dict[str, Any]], bool], timeout: float = 30
) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = _health(base)
        if condition(code, body):
            return code, body
        assert time.monotonic() < deadline, (code, body)
        time.sleep(0.05)


def _dormant(ws: Workspace, n: int) -> None:
    for cid in make_contacts(ws, n, at=T0 - 400 * DAY):
        add_order(ws, cid, at=T0 - 200 * DAY)


def test_a_failing_pass_is_retried_and_healthz_reports_it(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ws = sqlite_workspace
    _dormant(ws, 2)
    ws.flows.add("reactivation", now=T0 - DAY)
    failing = threading.Event()
    tick = ws.flows.tick

    def faulty(*args: Any, **kwargs: Any) -> Any:
        if failing.is_set():
            raise OperationalError("INSERT INTO coupons", {}, sqlite3.OperationalError("locked"))
        return tick(*args, **kwargs)

    monkeypatch.setattr(ws.flows, "tick", faulty)
    caplog.set_level(logging.INFO, logger="winback.engine")
    with running_service(ws, background=True, interval=0.2) as base:
        code, body = _until(base, lambda c, b: b["engine"]["passes"] >= 1)
        assert code == 200 and body["status"] == "ok" and body["store"] == "ok"
        assert body["engine"]["state"] == "running" and body["engine"]["last_error"] is None

        failing.set()  # one failure: reported, still healthy (the loop retries)
        code, body = _until(base, lambda c, b: b["engine"]["consecutive_failures"] >= 1)
        engine = body["engine"]
        assert engine["state"] == "failing"
        assert engine["last_error"]["type"] == "OperationalError"
        assert "INSERT INTO coupons" in engine["last_error"]["message"]
        assert code == (200 if engine["consecutive_failures"] < 3 else 503)

        code, body = _until(base, lambda c, b: b["engine"]["consecutive_failures"] >= 3)
        assert code == 503 and body["status"] == "unavailable"
        assert "engine passes failed" in body["engine"]["problem"]

        failing.clear()  # the cause goes away: the loop recovers by itself
        before = body["engine"]["passes"]
        code, body = _until(base, lambda c, b: b["engine"]["state"] == "running")
        assert code == 200 and body["engine"]["passes"] > before
        assert body["engine"]["consecutive_failures"] == 0
        assert body["engine"]["last_error"]["type"] == "OperationalError"  # kept for the record
    errors = [r for r in caplog.records if r.name == "winback.engine" and r.levelname == "ERROR"]
    assert len(errors) >= 3 and errors[0].exc_info is not None
    assert "engine pass failed (1 in a row); retrying in" in errors[0].getMessage()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_503_when_the_engine_thread_died(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = sqlite_workspace
    dead = threading.Event()

    def fatal(*args: Any, **kwargs: Any) -> Any:
        if dead.is_set():
            raise SystemExit("the thread ends without supervision")
        return TickReport()

    monkeypatch.setattr(ws.flows, "tick", fatal)
    with running_service(ws, background=True, interval=0.2) as base:
        dead.set()
        code, body = _until(base, lambda c, b: c == 503)
        assert body["engine"]["state"] == "stopped"
        assert body["engine"]["problem"] == "the engine loop is stopped"


def test_healthz_503_when_no_pass_succeeds_for_too_long(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch, clock: FixedClock
) -> None:
    ws = sqlite_workspace
    stuck, inside, release = threading.Event(), threading.Event(), threading.Event()
    tick = ws.flows.tick

    def slow(*args: Any, **kwargs: Any) -> Any:
        if stuck.is_set():
            inside.set()
            release.wait(30)
        return tick(*args, **kwargs)

    monkeypatch.setattr(ws.flows, "tick", slow)
    with running_service(ws, background=True, interval=0.2) as base:
        _until(base, lambda c, b: b["engine"]["passes"] >= 1)
        stuck.set()
        assert inside.wait(10)  # the loop is now inside a pass that does not end
        clock.advance(timedelta(seconds=ws.settings.engine_stale_seconds - 1))
        assert _health(base)[0] == 200
        clock.advance(timedelta(seconds=2))
        code, body = _health(base)
        assert code == 503 and body["engine"]["state"] == "running"
        assert body["engine"]["problem"] == "no successful engine pass for more than 900 s"
        release.set()
        stuck.clear()
        code, body = _until(base, lambda c, b: c == 200)
        assert body["engine"]["problem"] is None


def test_healthz_without_the_engine_and_its_schema(sqlite_workspace: Workspace) -> None:
    with running_service(sqlite_workspace) as base:
        code, body = _health(base)
    assert code == 200 and body["status"] == "ok"
    assert body["engine"]["state"] == "disabled" and body["engine"]["passes"] == 0
    responses = create_app(sqlite_workspace).openapi()["paths"]["/healthz"]["get"]["responses"]
    for status in ("200", "503"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/HealthPublic")


def test_engine_status_sees_a_dead_thread() -> None:
    status = EngineStatus(clock=FixedClock(T0), interval=30)
    thread = threading.Thread(target=lambda: None)
    thread.start()
    status.started()
    assert status.snapshot().healthy
    thread.join()
    status.watch(thread)
    snapshot = status.snapshot()
    assert snapshot.state == "stopped" and not snapshot.healthy
    assert EngineStatus(enabled=False).snapshot().state == "disabled"


# -- one-shot commands: transient failures retried, others not -----------------------------


def test_run_now_retries_a_transient_failure(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = sqlite_workspace
    _dormant(ws, 2)
    ws.flows.add("reactivation", now=T0 - DAY)
    w = str(ws.path)
    ws.close()
    calls: list[int] = []
    tick = Flows.tick

    def busy_once(self: Flows, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))
        return tick(self, *args, **kwargs)

    monkeypatch.setattr(Flows, "tick", busy_once)
    result = runner.invoke(app, ["run", "--now", "2026-03-01T09:00", "-w", w, "--json"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 and '"delivered": 2' in result.stdout


def test_run_now_gives_up_after_retry_for(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = str(sqlite_workspace.path)
    sqlite_workspace.close()
    calls: list[int] = []

    def always_busy(self: Flows, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(Flows, "tick", always_busy)
    started = time.monotonic()
    result = runner.invoke(app, ["run", "--now", "2026-03-01T09:00", "-w", w, "--retry-for", "2"])
    assert result.exit_code == 1
    assert "was given up (--retry-for 2)" in " ".join(result.output.split())
    assert len(calls) >= 2 and time.monotonic() - started < 10

    def bug(self: Flows, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise ZeroDivisionError("a bug is not retried")

    calls.clear()
    monkeypatch.setattr(Flows, "tick", bug)
    result = runner.invoke(app, ["run", "--now", "2026-03-01T09:00", "-w", w])
    assert isinstance(result.exception, ZeroDivisionError) and len(calls) == 1


# -- real processes ------------------------------------------------------------------------

FAULTY_RUN = """
import sys
from winback.flows.service import Flows

tick, calls = Flows.tick, []

def faulty(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise RuntimeError("injected failure in pass 2")
    return tick(self, *args, **kwargs)

Flows.tick = faulty
from winback.cli import main
main()
"""


def _env() -> dict[str, str]:
    return dict(os.environ, COLUMNS="200")


@pytest.mark.slow
def test_winback_run_survives_a_failing_pass_and_stops_on_sigterm(
    sqlite_workspace: Workspace,
) -> None:
    w = str(sqlite_workspace.path)
    sqlite_workspace.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", FAULTY_RUN, "run", "-w", w, "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        assert "Running flows" in proc.stdout.readline()
        # Pass 1 succeeds, pass 2 fails (logged, backed off), passes 3 and 4 succeed.
        passes = [proc.stdout.readline() for _ in range(3)]
        assert all("delivered" in line for line in passes), passes
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Stopped cleanly after" in out
    assert "engine pass failed (1 in a row); retrying in" in err
    assert "Traceback" in err and "RuntimeError: injected failure in pass 2" in err


@pytest.mark.slow
def test_winback_serve_runs_passes_and_stops_on_sigterm(sqlite_workspace: Workspace) -> None:
    w = str(sqlite_workspace.path)
    sqlite_workspace.close()
    port = free_port()
    proc = subprocess.Popen(
        [*WINBACK, "serve", "-w", w, "--port", str(port), "--interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                code, body = _health(base)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert code == 200 and body["engine"]["interval_seconds"] == 1
        first = body["engine"]["passes"]
        code, body = _until(base, lambda c, b: b["engine"]["passes"] >= first + 2)
        assert code == 200 and body["engine"]["state"] == "running"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "did not stop" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WINBACK_SMS_PROVIDER": "nowhere"}, "sms_provider = 'nowhere'"),
        ({}, "flows/broken.yaml"),
    ],
)
@pytest.mark.slow
def test_configuration_errors_exit_2_at_once(
    sqlite_workspace: Workspace, env: dict[str, str], message: str
) -> None:
    w = Path(sqlite_workspace.path)
    sqlite_workspace.close()
    if not env:
        (w / "flows").mkdir(exist_ok=True)
        (w / "flows" / "broken.yaml").write_text("name: b\nsteps: [{wait: soon}]\n")
    for command in (["run", "--interval", "0.2"], ["deliver"]):
        proc = subprocess.run(
            [*WINBACK, *command, "-w", str(w)],
            capture_output=True, text=True, timeout=60, env={**_env(), **env},
        )  # fmt: skip
        if command[0] == "deliver" and not env:
            assert proc.returncode == 0, proc.stderr  # deliver does not read flow files
            continue
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert message in " ".join(proc.stderr.split())
