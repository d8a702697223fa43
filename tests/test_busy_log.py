"""Busy answers are logged without flooding the log under sustained overload."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import Request

from winback.store.busy import StoreBusy
from winback.web.errors import BusyLog


def _request(rid: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/events/batch",
            "headers": [],
            "state": {"request_id": rid},
        }
    )


def test_one_line_per_interval_counts_the_answers_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    busy = BusyLog(every=10.0, clock=lambda: now[0])
    exc = StoreBusy("the journal is full", retry_after=5)
    with caplog.at_level(logging.WARNING, logger="winback.web"):
        for i in range(1000):
            now[0] += 0.001
            busy(_request(f"r{i}"), exc)
        now[0] += 10.0
        busy(_request("late"), exc)
    lines = [r.getMessage() for r in caplog.records if r.name == "winback.web"]
    assert len(lines) == 2
    assert "request r0" in lines[0] and "more busy answers" not in lines[0]
    assert "request late" in lines[1] and "(999 more busy answers since the last line)" in lines[1]
