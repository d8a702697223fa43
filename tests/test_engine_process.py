"""``winback serve`` runs the engine loop in a supervised child process: a child that dies
is a failed pass in ``GET /healthz`` and a new child takes over; SIGTERM stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.delivery_support import free_port
from tests.web_support import new_api_key
from winback.workspace import Workspace

WINBACK = [sys.executable, "-c", "from winback.cli import main; main()"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _health(base: str) -> dict[str, Any]:
    while True:
        try:
            body: dict[str, Any] = httpx.get(f"{base}/healthz", timeout=10).json()
            return body
        except httpx.TransportError:
            time.sleep(0.1)


def _until(base: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while not condition(body := _health(base)):
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


def _child_named(pid: int, name: str) -> int | None:
    """The live child of ``pid`` called ``name`` (``/proc/<pid>/comm``)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == name and _alive(int(child)):
                    return int(child)
            except OSError:
                continue
    return None


def _terminated(proc: subprocess.Popen[str]) -> str:
    """SIGTERM to ``winback serve``; its standard error once it has exited 0, every child
    stopped in time."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "did not stop" not in err
    return err


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_killed_engine_process_is_reported_and_started_again(
    sqlite_workspace: Workspace,
) -> None:
    folder = str(sqlite_workspace.path)
    sqlite_workspace.close()
    port = free_port()
    proc = subprocess.Popen(
        [*WINBACK, "serve", "-w", folder, "--port", str(port), "--interval", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        body = _until(base, lambda b: b["engine"]["passes"] >= 1)
        assert body["engine"]["state"] == "running"
        first = _child_named(proc.pid, "winback-engine")
        assert first is not None and first != proc.pid
        os.kill(first, signal.SIGKILL)
        body = _until(base, lambda b: b["engine"]["failures"] >= 1)
        assert "exited with code -9" in body["engine"]["last_error"]["message"]
        passes = body["engine"]["passes"]
        body = _until(
            base, lambda b: b["engine"]["passes"] > passes and b["engine"]["state"] == "running"
        )
        second = _child_named(proc.pid, "winback-engine")
        assert second is not None and second != first
        _terminated(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _alive(second)


def _page_views(ws: Workspace) -> int:
    with ws.engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM events WHERE type = 'page_view'")).scalar() or 0
        )


def _post_batch(base: str, key: str, tag: str, n: int) -> None:
    events = [
        {"customer_id": f"c{i % 3}", "type": "page_view", "event_id": f"{tag}-{i}"}
        for i in range(n)
    ]
    response = httpx.post(
        f"{base}/api/v1/events/batch",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text


def _applied(ws: Workspace, n: int) -> None:
    deadline = time.monotonic() + 60
    while _page_views(ws) < n:
        assert time.monotonic() < deadline, f"{_page_views(ws)} of {n} events applied"
        time.sleep(0.05)
    assert _page_views(ws) == n


@pytest.mark.slow
def test_the_event_journal_is_applied_by_a_child_process_started_again_when_it_dies(
    sqlite_workspace: Workspace,
) -> None:
    """Without the engine too, accepted events are written by the applier's own process;
    killed, it is reported in ``GET /healthz`` and a new one applies what follows (and what
    the dead one left in the journal)."""
    ws = sqlite_workspace
    key = new_api_key(ws, "applier")
    port = free_port()
    proc = subprocess.Popen(
        [*WINBACK, "serve", "-w", str(ws.path), "--port", str(port), "--no-background"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        body = _until(base, lambda b: b["events"]["running"])
        assert body["events"]["applier"] == "process"
        assert body["events"]["restarts"] == 0 and body["status"] == "ok"
        first = _child_named(proc.pid, "winback-applier")
        assert first is not None
        assert _child_named(proc.pid, "winback-engine") is None  # --no-background
        _post_batch(base, key, "a", 50)
        _applied(ws, 50)

        os.kill(first, signal.SIGKILL)
        body = _until(base, lambda b: b["events"]["restarts"] >= 1 and b["events"]["running"])
        assert "exited with code -9" in body["events"]["last_error"]
        assert body["events"]["healthy"] and body["status"] == "ok"
        second = _child_named(proc.pid, "winback-applier")
        assert second is not None and second != first
        _post_batch(base, key, "b", 30)
        _applied(ws, 80)
        assert _until(base, lambda b: b["events"]["backlog_events"] == 0)
        _terminated(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _alive(second)
