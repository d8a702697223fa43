"""Every HTTP input answered with a clear 4xx, through a running uvicorn: body size
limits (declared or streamed), timestamps before 1970, non-finite numbers, and random JSON
that never yields a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.delivery_support import add_contact, add_message, configure
from tests.web_support import new_api_key, running_service
from winback.delivery.links.tokens import TokenSigner
from winback.store.schema import contacts, events
from winback.workspace import Workspace


def _count(ws: Workspace, table: Any) -> int:
    with ws.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _event_body(size: int) -> bytes:
    return json.dumps(
        {"customer_id": "big", "type": "page_view", "properties": {"pad": "x" * size}}
    ).encode()


@pytest.mark.slow
def test_bodies_over_the_limit_are_413_declared_or_streamed(workspace: Workspace) -> None:
    workspace = configure(workspace, http_max_body_bytes=4096, http_max_report_bytes=8192)
    key = new_api_key(workspace, "shop")
    cid = add_contact(workspace, "c1", email="ada@example.com")
    token = TokenSigner(workspace.settings.secret_key).sign("u", add_message(workspace, cid), cid)
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def chunks(body: bytes) -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    with running_service(workspace) as base, httpx.Client(headers=auth) as client:
        small = client.post(f"{base}/api/v1/events", content=_event_body(3000))
        declared = client.post(f"{base}/api/v1/events", content=_event_body(5000))
        streamed = client.post(f"{base}/api/v1/events", content=chunks(_event_body(50_000)))
        batch = client.post(
            f"{base}/api/v1/events/batch",
            content=chunks(
                json.dumps({"events": [{"customer_id": "c", "type": "x"}] * 200}).encode()
            ),
        )
        form = client.post(
            f"{base}/u/{token}",
            content=chunks(b"List-Unsubscribe=One-Click&pad=" + b"y" * 10_000),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        report = client.post(
            f"{base}/api/v1/feedback-reports/raw",
            content=b"x" * 6000,
            headers={"Content-Type": "message/rfc822"},
        )
        big_report = client.post(
            f"{base}/api/v1/feedback-reports/raw",
            content=chunks(b"x" * 9000),
            headers={"Content-Type": "message/rfc822"},
        )
    assert small.status_code == 202, small.text
    for name, answer in {
        "declared": declared,
        "streamed": streamed,
        "batch": batch,
        "form": form,
        "big report": big_report,
    }.items():
        assert answer.status_code == 413, (name, answer.status_code, answer.text)
        assert answer.headers.get("X-Request-ID"), name
    assert "larger than 4096 bytes (http_max_body_bytes)" in declared.json()["detail"]
    assert "larger than 4096 bytes" in streamed.json()["detail"]
    assert "8192 bytes (http_max_report_bytes)" in big_report.json()["detail"]
    assert report.status_code == 200, report.text  # the report limit is the larger one
    assert _count(workspace, events) == 1  # only the small event
    with workspace.engine.connect() as conn:
        consent = conn.execute(
            select(contacts.c.email_consent).where(contacts.c.id == cid)
        ).scalar_one()
    assert consent is True  # the oversized unsubscribe form did nothing


def test_times_before_1970_are_422_naming_the_field(workspace: Workspace) -> None:
    key = new_api_key(workspace, "shop")
    early = ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "1970-01-01T00:30:00+01:00"]
    with running_service(workspace) as base:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
            answers = [
                client.post(
                    f"{base}/api/v1/events",
                    json={"customer_id": "a", "type": "page_view", "occurred_at": at},
                )
                for at in early
            ]
            in_batch = client.post(
                f"{base}/api/v1/events/batch",
                json={
                    "events": [
                        {"customer_id": "a", "type": "page_view"},
                        {"customer_id": "a", "type": "page_view", "occurred_at": early[0]},
                    ]
                },
            )
            report = client.post(
                f"{base}/api/v1/feedback-reports",
                json={"reports": [{"type": "bounce", "email": "a@x.org", "occurred_at": early[1]}]},
            )
            epoch = client.post(
                f"{base}/api/v1/events",
                json={"customer_id": "a", "type": "page_view", "occurred_at": "1970-01-01T00:00Z"},
            )
    for at, answer in zip(early, answers, strict=True):
        assert answer.status_code == 422, (at, answer.text)
        [problem] = answer.json()["detail"]
        assert problem["loc"] == ["body", "occurred_at"]
        assert "before 1970-01-01T00:00:00Z" in problem["msg"]
    assert in_batch.status_code == 422
    assert in_batch.json()["detail"][0]["loc"] == ["body", "events", 1, "occurred_at"]
    assert report.status_code == 422
    assert report.json()["detail"][0]["loc"] == ["body", "reports", 0, "occurred_at"]
    assert epoch.status_code == 202, epoch.text
    assert _count(workspace, events) == 1


def test_non_finite_numbers_and_non_booleans_are_refused(workspace: Workspace) -> None:
    key = new_api_key(workspace, "shop")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    bodies = {
        "infinity": b'{"customer_id": "a", "type": "x", "properties": {"v": Infinity}}',
        "-infinity": b'{"customer_id": "a", "type": "x", "properties": {"v": [-Infinity]}}',
        "amount": b'{"customer_id": "a", "type": "purchase", '
        b'"properties": {"order_id": "o1", "amount": Infinity}}',
        "huge": b'{"customer_id": "a", "type": "x", "occurred_at": 1e400}',
        "nul report": b'{"reports": [{"type": "bounce", "email": "a\\u0000@x.org"}]}',
    }
    with running_service(workspace) as base, httpx.Client(headers=auth) as client:
        answers = {
            name: client.post(
                f"{base}/api/v1/{'feedback-reports' if 'report' in name else 'events'}",
                content=body,
            )
            for name, body in bodies.items()
        }
    assert {n: a.status_code for n, a in answers.items()} == dict.fromkeys(bodies, 422), {
        n: a.text for n, a in answers.items()
    }
    assert _count(workspace, events) == 0


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "1969-07-20T20:17:00Z",
            "2026-01-01",
            "\ud800",
            "a\x00b",
            "",
        ]
    )
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = ["customer_id", "type", "occurred_at", "event_id", "properties", "machine"]
_EVENT = st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=5) | st.fixed_dictionaries(
    {"customer_id": st.text(max_size=10), "type": st.sampled_from(["purchase", "page_view"])},
    optional={
        "occurred_at": _SCALARS,
        "properties": st.dictionaries(
            st.sampled_from(
                ["order_id", "amount", "currency", "items", "coupon", "machine", "message_id"]
            ),
            _JSON,
            max_size=5,
        ),
    },
)


@pytest.mark.slow
def test_no_input_yields_a_5xx(sqlite_workspace: Workspace) -> None:
    """Random JSON (non-finite numbers, lone surrogates, NUL, odd times, wrong types) sent
    to the event and report routes of a running service: every answer is below 500."""
    key = new_api_key(sqlite_workspace, "shop")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with running_service(sqlite_workspace) as base, httpx.Client(headers=auth) as client:

        @given(
            route=st.sampled_from(["events", "events/batch", "feedback-reports"]),
            item=_EVENT,
            wrap=st.booleans(),
        )
        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(route: str, item: dict[str, Any], wrap: bool) -> None:
            body: Any = item
            if route == "events/batch" and wrap:
                body = {"events": [item, {"customer_id": "ok", "type": "page_view"}]}
            elif route == "feedback-reports" and wrap:
                body = {"reports": [{**item, "type": "bounce"}]}
            raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
            answer = client.post(f"{base}/api/v1/{route}", content=raw)
            assert answer.status_code < 500, (route, raw, answer.text)

        check()
