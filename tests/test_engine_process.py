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

from tests.delivery_support import free_port
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


def _engine_pid(pid: int) -> int:
    """The engine's process among the children of ``pid``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
                return int(child)
    raise AssertionError("no engine process")


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
        first = _engine_pid(proc.pid)
        assert first != proc.pid
        os.kill(first, signal.SIGKILL)
        body = _until(base, lambda b: b["engine"]["failures"] >= 1)
        assert "exited with code -9" in body["engine"]["last_error"]["message"]
        passes = body["engine"]["passes"]
        body = _until(
            base, lambda b: b["engine"]["passes"] > passes and b["engine"]["state"] == "running"
        )
        second = _engine_pid(proc.pid)
        assert second != first and _alive(second)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert not _alive(second)
    assert "did not stop" not in err
