"""The event API under concurrent load: authentication that never writes, group commit of
concurrent requests (each acknowledged once committed, stored exactly once, a bad one failing
alone), and 503 when the store stays busy."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from tests.conftest import T0
from tests.web_support import new_api_key, running_service
from winback.clock import FixedClock
from winback.delivery.event_intake import EventsRejected
from winback.delivery.inbound import EventIn
from winback.delivery.ingest_queue import IngestQueue
from winback.store.apikeys import ApiKeyExists, create
from winback.store.busy import StoreBusy
from winback.store.schema import api_keys, contacts, events
from winback.web.apikeys import KeyRing
from winback.workspace import Workspace

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def statements(ws: Workspace) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip().upper())

    event.listen(ws.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(ws.engine, "before_cursor_execute", record)


def _last_used(ws: Workspace) -> Any:
    with ws.engine.connect() as conn:
        return conn.execute(select(api_keys.c.last_used_at)).scalar()


def _event_keys(ws: Workspace) -> list[str]:
    with ws.engine.connect() as conn:
        return list(conn.execute(select(events.c.event_key)).scalars())


def test_authentication_reads_once_and_never_writes(
    workspace: Workspace, clock: FixedClock
) -> None:
    key = new_api_key(workspace, "shop")
    ring = KeyRing(workspace.engine, workspace.clock.now)
    with statements(workspace) as seen:
        for _ in range(50):
            assert ring.verify(key) == "shop"
        assert ring.verify(key + "x") is None
    assert not [s for s in seen if s.startswith(WRITES)], seen
    # One read for the good key (then cached), one for the bad one.
    assert len([s for s in seen if s.startswith("SELECT")]) == 2
    assert _last_used(workspace) is None  # kept in memory...
    used_at = clock.now()
    clock.advance(timedelta(minutes=5))
    ring.flush()  # ...until a flush writes it
    assert _last_used(workspace) == used_at
    ring.close()


def test_key_use_over_http_is_flushed_at_shutdown_not_per_request(workspace: Workspace) -> None:
    key = new_api_key(workspace, "shop")
    auth = {"Authorization": f"Bearer {key}"}
    with running_service(workspace) as base, statements(workspace) as seen:
        for n in range(5):
            r = httpx.post(
                f"{base}/api/v1/events",
                json={"customer_id": "c1", "type": "page_view", "event_id": f"e{n}"},
                headers=auth,
            )
            assert r.status_code == 200
        assert _last_used(workspace) is None
    assert not [s for s in seen if "API_KEYS" in s and s.startswith(WRITES)]
    assert _last_used(workspace) is not None  # written when the service stopped


def test_revocation_takes_effect_at_once_here_and_within_the_cache_time_elsewhere(
    workspace: Workspace,
) -> None:
    key = new_api_key(workspace, "shop")
    seconds = [0.0]
    elsewhere = KeyRing(workspace.engine, workspace.clock.now, monotonic=lambda: seconds[0])
    assert elsewhere.verify(key) == "shop"
    here = KeyRing(workspace.engine, workspace.clock.now)
    assert here.verify(key) == "shop"
    assert here.revoke("shop")
    assert here.verify(key) is None  # this ring: at once
    seconds[0] = elsewhere_cache = 4.9
    assert elsewhere.verify(key) == "shop"  # another process: still cached...
    seconds[0] = elsewhere_cache + 0.2
    assert elsewhere.verify(key) is None  # ...for at most CACHE_SECONDS
    elsewhere.close()
    here.close()


def test_a_key_name_created_twice_at_once_is_one_key_and_a_clear_error(
    workspace: Workspace,
) -> None:
    """The second create passes its existence check while the first is not yet committed
    (PostgreSQL, READ COMMITTED; on SQLite it waits for the write lock and sees the row)."""
    first = workspace.engine.connect()
    begun = first.begin()
    first.execute(
        api_keys.insert().values(name="shop", key_hash="0" * 64, prefix="wbk_first", created_at=T0)
    )
    outcome: list[BaseException | str] = []

    def second() -> None:
        try:
            outcome.append(create(workspace.engine, "shop", at=T0))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)  # the second create is waiting on the first's row (or on the lock)
    begun.commit()
    first.close()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], ApiKeyExists), outcome
    assert "an API key named 'shop' exists" in str(outcome[0])
    with workspace.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(api_keys)) == 1


@pytest.mark.slow
def test_concurrent_single_events_are_acknowledged_and_stored_exactly_once(
    workspace: Workspace,
) -> None:
    key = new_api_key(workspace, "shop")
    auth = {"Authorization": f"Bearer {key}"}
    ids = [f"e{n}" for n in range(150)] + [f"e{n}" for n in range(0, 150, 3)]  # 50 repeats
    with running_service(workspace) as base:

        def send(event_id: str) -> httpx.Response:
            with httpx.Client(headers=auth) as client:
                return client.post(
                    f"{base}/api/v1/events",
                    json={
                        "customer_id": f"c{event_id[-1]}",
                        "type": "page_view",
                        "event_id": event_id,
                    },
                )

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, ids))
    assert [r.status_code for r in answers] == [200] * len(ids)
    assert sum(r.json()["new"] for r in answers) == 150
    assert sum(r.json()["duplicates"] for r in answers) == 50
    keys = _event_keys(workspace)
    assert sorted(keys) == sorted(f"api:e{n}" for n in range(150))
    queue = workspace.delivery.event_intake.queue
    assert queue.requests == len(ids)


def _gated(queue_of: Any) -> tuple[IngestQueue[EventIn, Any], threading.Event, list[int]]:
    """An IngestQueue over the workspace's real writes whose first transaction waits for
    ``gate``: requests submitted meanwhile queue up."""
    gate, sizes = threading.Event(), []

    def write_group(requests: Any) -> Any:
        sizes.append(len(requests))
        if len(sizes) == 1:
            gate.wait(10)
        return queue_of.write_group(requests)

    return IngestQueue(write_group, queue_of.write_one), gate, sizes


def _view(n: int, **extra: Any) -> EventIn:
    return EventIn(customer_id=f"c{n % 7}", type="page_view", event_id=f"v{n}", **extra)


def test_requests_queued_during_a_commit_share_the_next_transaction(
    workspace: Workspace,
) -> None:
    intake = workspace.delivery.event_intake
    queue, gate, sizes = _gated(intake)
    first = queue.submit([_view(0)])
    _until(lambda: bool(sizes))
    later = [queue.submit([_view(n)]) for n in range(1, 40)]
    later += [queue.submit([_view(1)]), queue.submit([_view(0), _view(40)])]
    assert not any(f.done() for f in later)  # nothing answered before its commit
    gate.set()
    assert first.result(10).new == 1
    results = [f.result(10) for f in later]
    assert sizes == [1, 41]  # one transaction for the 41 queued requests
    # v1 repeated in the same group, v0 recorded by the transaction before.
    assert [(r.new, r.duplicates) for r in results[-3:]] == [(1, 0), (0, 1), (1, 1)]
    assert [r.new for r in results[:-3]] == [1] * 38
    assert sorted(_event_keys(workspace)) == sorted(f"api:v{n}" for n in range(41))
    queue.close()


def test_a_bad_event_fails_alone_and_the_others_are_written(workspace: Workspace) -> None:
    intake = workspace.delivery.event_intake
    queue, gate, sizes = _gated(intake)
    first = queue.submit([_view(0)])
    _until(lambda: bool(sizes))
    # Queued without the intake's checks (nor the model's): a time that has no UTC
    # equivalent makes the shared transaction fail, and then this request alone.
    bad = EventIn.model_construct(
        customer_id="c1",
        type="page_view",
        occurred_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        event_id=None,
        properties={},
    )
    good = [queue.submit([_view(n)]) for n in range(1, 10)]
    culprit = queue.submit([bad])
    more = [queue.submit([_view(n)]) for n in range(10, 20)]
    gate.set()
    first.result(10)
    assert [f.result(10).new for f in good + more] == [1] * 19
    with pytest.raises(EventsRejected, match="could not be recorded"):
        culprit.result(10)
    assert sorted(_event_keys(workspace)) == sorted(f"api:v{n}" for n in range(20))
    queue.close()


def test_a_bad_event_among_concurrent_requests_gets_a_4xx(workspace: Workspace) -> None:
    key = new_api_key(workspace, "shop")
    auth = {"Authorization": f"Bearer {key}"}
    bodies: list[dict[str, Any]] = [
        {"customer_id": "c1", "type": "page_view", "event_id": f"ok{n}"} for n in range(40)
    ]
    bodies.insert(20, {"customer_id": "c1", "type": "x", "occurred_at": "0001-01-01T00:00+05:00"})
    with running_service(workspace) as base:

        def send(body: dict[str, Any]) -> httpx.Response:
            with httpx.Client(headers=auth) as client:
                return client.post(f"{base}/api/v1/events", json=body)

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, bodies))
    codes = [r.status_code for r in answers]
    assert codes[20] == 422 and "before 1970" in answers[20].text
    assert codes[:20] + codes[21:] == [200] * 40
    assert len(_event_keys(workspace)) == 40


def test_text_no_store_can_keep_is_refused_or_replaced(workspace: Workspace) -> None:
    key = new_api_key(workspace, "shop")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    refused = {  # bodies as a client may send them (json.dumps cannot write some of them)
        "nul id": b'{"customer_id": "a\\u0000b", "type": "page_view"}',
        "surrogate id": b'{"customer_id": "\\ud800", "type": "page_view"}',
        "nan": b'{"customer_id": "a", "type": "page_view", "properties": {"x": NaN}}',
    }
    kept = (
        b'{"customer_id": "a", "type": "page_view", "event_id": "k", '
        b'"properties": {"n\\u0000ote": "x\\u0000y?", "items": [{"name": "\\udfffz"}]}}'
    )
    with running_service(workspace) as base, httpx.Client(headers=auth) as client:
        answers = {n: client.post(f"{base}/api/v1/events", content=b) for n, b in refused.items()}
        batch = client.post(
            f"{base}/api/v1/events/batch",
            content=b'{"events": [{"customer_id": "a", "type": "page_view"}, '
            b'{"customer_id": "b", "type": "page_view", "event_id": "x\\u0000"}]}',
        )
        stored = client.post(f"{base}/api/v1/events", content=kept)
    for name, answer in answers.items():
        assert answer.status_code == 422, (name, answer.text)
    assert answers["nul id"].json()["detail"][0]["loc"] == ["body", "customer_id"]
    assert "unicode" in answers["surrogate id"].text
    assert "nan at properties.x is not a JSON number" in answers["nan"].text
    assert batch.status_code == 422
    assert batch.json()["detail"][0]["loc"][-3:] == ["events", 1, "event_id"]
    assert stored.status_code == 200, stored.text
    with workspace.engine.connect() as conn:
        props = conn.execute(select(events.c.properties)).scalar_one()
    assert props == {"n\ufffdote": "x\ufffdy?", "items": [{"name": "\ufffdz"}]}


def test_events_dated_in_the_future_and_unreadable_machine_flags_are_refused(
    workspace: Workspace,
) -> None:
    key = new_api_key(workspace, "shop")
    soon, later = T0 + timedelta(hours=1), T0 + timedelta(days=2)
    bodies = {
        "soon": {"customer_id": "a", "type": "page_view", "occurred_at": soon.isoformat()},
        "later": {"customer_id": "a", "type": "page_view", "occurred_at": later.isoformat()},
        "9999": {"customer_id": "a", "type": "page_view", "occurred_at": "9999-01-01T00:00Z"},
        "no": {"customer_id": "a", "type": "email_opened", "properties": {"machine": "no"}},
        "yes": {"customer_id": "b", "type": "email_opened", "properties": {"machine": "yes"}},
        "maybe": {"customer_id": "a", "type": "email_opened", "properties": {"machine": "maybe"}},
    }
    with running_service(workspace) as base:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
            codes = {n: client.post(f"{base}/api/v1/events", json=b) for n, b in bodies.items()}
    assert {n: r.status_code for n, r in codes.items()} == {
        "soon": 200,
        "later": 400,
        "9999": 400,
        "no": 200,
        "yes": 200,
        "maybe": 400,
    }
    assert "more than a day after the server's clock" in codes["later"].json()["detail"]
    assert "event 0: properties.machine 'maybe'" in codes["maybe"].json()["detail"]
    with workspace.engine.connect() as conn:
        flags = dict(
            conn.execute(
                select(contacts.c.customer_id, events.c.machine)
                .join(contacts, contacts.c.id == events.c.contact_id)
                .where(events.c.type == "email_opened")
            ).all()
        )
        seen = conn.execute(
            select(contacts.c.last_seen).where(contacts.c.customer_id == "a")
        ).scalar_one()
    assert flags == {"a": False, "b": True}
    assert seen == T0, "a visit stamped an hour ahead counts as seen when it is applied"


def test_store_busy_for_longer_than_the_wait_answers_503_with_retry_after(
    sqlite_workspace: Workspace,
) -> None:
    """Another writer holds SQLite's write lock: the request being written waits for it,
    and those queued behind it past the bounded wait are refused (not written) with 503.
    (The 503 mapping of StoreBusy belongs to the app's exception handlers.)"""
    ws = sqlite_workspace
    key = new_api_key(ws, "shop")
    queue = ws.delivery.event_intake.queue
    queue.wait_seconds = 0.2
    auth = {"Authorization": f"Bearer {key}"}
    holder = sqlite3.connect(ws.path / "winback.db", isolation_level=None)
    with running_service(ws) as base:

        def send(n: int) -> httpx.Response:
            body = {"customer_id": "c1", "type": "page_view", "event_id": f"b{n}"}
            return httpx.post(f"{base}/api/v1/events", json=body, headers=auth, timeout=30)

        holder.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(send, 0)
            _until(lambda: queue.writing == 1)  # the writer waits for the lock with b0
            waiting = [pool.submit(send, n) for n in range(1, 4)]
            _until(lambda: queue.waiting == 3)
            time.sleep(queue.wait_seconds + 0.1)  # b1..b3 have waited past the bound
            holder.execute("ROLLBACK")
            answers = [first.result()] + [f.result() for f in waiting]
    holder.close()
    assert answers[0].status_code == 200
    assert [r.status_code for r in answers[1:]] == [503] * 3
    for r in answers[1:]:
        assert int(r.headers["Retry-After"]) >= 1
        assert "busy" in r.json()["detail"]
    assert _event_keys(ws) == ["api:b0"]  # refused means not written


def test_a_full_queue_refuses_at_once_with_store_busy(sqlite_workspace: Workspace) -> None:
    intake = sqlite_workspace.delivery.event_intake
    queue, gate, sizes = _gated(intake)
    queue.max_pending = 5
    first = queue.submit([_view(0)])
    _until(lambda: bool(sizes))
    queued = queue.submit([_view(n) for n in range(1, 5)])
    with pytest.raises(StoreBusy) as refused:
        queue.submit([_view(5), _view(6)])
    assert refused.value.retry_after >= 1
    gate.set()
    assert first.result(10).new == 1 and queued.result(10).new == 4
    with sqlite_workspace.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 5
    queue.close()


def test_an_event_id_given_twice_in_one_request_is_one_new_event(workspace: Workspace) -> None:
    """The second copy is a duplicate: counted once, stored once, and its (later) time moves
    nothing."""
    earlier, later = T0 - timedelta(hours=2), T0 - timedelta(hours=1)
    batch = [_view(0, occurred_at=earlier), _view(1), _view(0, occurred_at=later)]
    result = workspace.delivery.event_intake.submit(batch).result(10)
    assert (result.accepted, result.new, result.duplicates) == (3, 2, 1)
    assert sorted(_event_keys(workspace)) == ["api:v0", "api:v1"]
    with workspace.engine.connect() as conn:
        seen = conn.execute(
            select(contacts.c.last_seen).where(contacts.c.customer_id == "c0")
        ).scalar_one()
    assert seen == earlier
    again = workspace.delivery.ingest([_view(0, occurred_at=later), _view(0)])
    assert (again.new, again.duplicates) == (0, 2)


def test_events_are_stored_as_sqlalchemy_reads_them_and_refusals_are_its_errors(
    workspace: Workspace,
) -> None:
    from sqlalchemy.exc import IntegrityError

    from winback.delivery.records import record_events

    at = T0 - timedelta(minutes=5)
    workspace.delivery.ingest(
        [
            _view(0, occurred_at=at, properties={"url": "/é", "n": [1, None]}),
            _view(1, properties={"message_id": "m-1", "machine": True}),
        ]
    )
    with workspace.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.event_key, events.c.occurred_at, events.c.properties, events.c.machine)
            .where(events.c.event_key.in_(["api:v0", "api:v1"]))
            .order_by(events.c.event_key)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("api:v0", at, {"url": "/é", "n": [1, None]}, False),
        ("api:v1", T0, {"message_id": "m-1", "machine": True}, True),
    ]
    unknown = {"event_key": "x", "contact_id": 10**9, "type": "page_view", "occurred_at": at}
    with pytest.raises(IntegrityError), workspace.engine.begin() as conn:
        record_events(conn, [unknown])


def test_each_contact_moves_only_the_attributes_its_events_move(workspace: Workspace) -> None:
    """One call, several shapes of change: each contact gets its own attributes moved and
    ``updated_at`` stamped; a machine open moves nothing."""
    t1, t2 = T0 - timedelta(hours=3), T0 - timedelta(hours=2)
    workspace.delivery.ingest(
        [
            EventIn(customer_id="p", type="page_view", event_id="1", occurred_at=t1),
            EventIn(customer_id="o", type="email_opened", event_id="2", occurred_at=t1),
            EventIn(customer_id="b", type="page_view", event_id="3", occurred_at=t1),
            EventIn(customer_id="b", type="email_clicked", event_id="4", occurred_at=t2),
            EventIn(customer_id="b", type="page_view", event_id="5", occurred_at=t2),
            EventIn(
                customer_id="m",
                type="email_opened",
                event_id="6",
                occurred_at=t2,
                properties={"machine": True},
            ),
        ],
        now=T0,
    )
    c = contacts.c
    with workspace.engine.connect() as conn:
        rows = conn.execute(
            select(
                c.customer_id,
                c.last_seen,
                c.last_email_opened,
                c.last_email_link_clicked,
                c.updated_at,
            ).order_by(c.customer_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("b", t2, None, t2, T0),
        ("m", None, None, None, T0),  # created by this call, not moved by the machine open
        ("o", None, t1, None, T0),
        ("p", t1, None, None, T0),
    ]
