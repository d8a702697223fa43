"""The event API under concurrent load: authentication that never writes, group commit of
concurrent requests into the event journal (each acknowledged once on disk), the applier
(each event stored exactly once, an entry the store refuses set aside alone), and 503 when
the journal stays locked."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from tests.conftest import T0
from tests.soak_support import winback_serve
from tests.web_support import new_api_key, running_service
from winback.clock import FixedClock
from winback.delivery.event_intake import EventIntake
from winback.delivery.event_journal import JOURNAL, EventJournal, JournalFull, Record
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
            assert r.status_code == 202
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
        intake = workspace.delivery.event_intake
        _until(lambda: intake.backlog() == (0, 0))  # the applier empties the journal
        keys = _event_keys(workspace)
    assert [r.status_code for r in answers] == [202] * len(ids)
    assert [r.json() for r in answers] == [{"accepted": 1}] * len(ids)
    assert sorted(keys) == sorted(f"api:e{n}" for n in range(150))
    assert intake.queue.requests + intake.appended_here == len(ids)
    assert intake.applied == len(ids)  # repeats included: the store's keys kept them out


def _gated(intake: EventIntake) -> tuple[IngestQueue[Record, int], threading.Event, list[int]]:
    """An IngestQueue over the intake's real journal appends whose first append waits for
    ``gate``: requests submitted meanwhile queue up."""
    gate, sizes = threading.Event(), []

    def append_group(requests: Any) -> Any:
        sizes.append(len(requests))
        if len(sizes) == 1:
            gate.wait(10)
        return intake._append_group(requests)

    return IngestQueue(append_group, intake._append_one), gate, sizes


def _view(n: int, **extra: Any) -> EventIn:
    return EventIn(customer_id=f"c{n % 7}", type="page_view", event_id=f"v{n}", **extra)


def _record(ws: Workspace, *views: EventIn) -> Record:
    body = json.dumps({"events": [v.model_dump(mode="json") for v in views]}).encode()
    return Record(ws.clock.now(), True, len(views), body)


def test_requests_queued_during_an_append_share_the_next_one(workspace: Workspace) -> None:
    intake = workspace.delivery.event_intake
    queue, gate, sizes = _gated(intake)
    first = queue.submit([_record(workspace, _view(0))])
    _until(lambda: bool(sizes))
    later = [queue.submit([_record(workspace, _view(n))]) for n in range(1, 40)]
    later += [
        queue.submit([_record(workspace, _view(1))]),
        queue.submit([_record(workspace, _view(0), _view(40))]),
    ]
    assert not any(f.done() for f in later)  # nothing answered before its append
    assert intake.backlog() == (0, 0)
    gate.set()
    assert first.result(10) == 1
    assert [f.result(10) for f in later] == [1] * 40 + [2]
    assert sizes == [1, 41]  # one append for the 41 queued requests
    assert intake.backlog() == (42, 43)  # on disk, not yet in the store
    assert _event_keys(workspace) == []
    assert intake.apply_pending() == 43
    # v1 and v0 given twice: stored once.
    assert sorted(_event_keys(workspace)) == sorted(f"api:v{n}" for n in range(41))
    assert intake.backlog() == (0, 0)
    queue.close()


def test_an_entry_the_store_refuses_is_set_aside_and_the_others_are_applied(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    intake = workspace.delivery.event_intake
    # Appended without the intake's checks (nor the model's): the model refuses this time
    # when the entry is read back, which fails the shared transaction, then this entry alone.
    bad = EventIn.model_construct(
        customer_id="c1",
        type="page_view",
        occurred_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        event_id=None,
        properties={},
    )
    records = [_record(workspace, _view(n)) for n in range(10)]
    records.insert(5, _record(workspace, bad))
    intake.journal.append(records)
    caplog.set_level(logging.ERROR, logger="winback.delivery")
    assert intake.apply_pending() == 10
    assert sorted(_event_keys(workspace)) == sorted(f"api:v{n}" for n in range(10))
    assert intake.backlog() == (0, 0)
    (rejected,) = intake.journal.rejected()
    assert rejected["id"] == 6 and b"0001-01-01" in rejected["body"]  # type: ignore[operator]
    assert rejected["reason"]
    assert any("entry 6" in r.getMessage() for r in caplog.records)


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
    assert codes[:20] + codes[21:] == [202] * 40
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
    assert stored.status_code == 202, stored.text
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
        "soon": 202,
        "later": 400,
        "9999": 400,
        "no": 202,
        "yes": 202,
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


def test_a_busy_store_does_not_hold_up_acceptance(sqlite_workspace: Workspace) -> None:
    """Another writer holds SQLite's write lock: events are still accepted at once (they are
    in the journal) and applied once the store is free."""
    ws = sqlite_workspace
    key = new_api_key(ws, "shop")
    auth = {"Authorization": f"Bearer {key}"}
    holder = sqlite3.connect(ws.path / "winback.db", isolation_level=None)
    with running_service(ws) as base:
        holder.execute("BEGIN IMMEDIATE")
        try:
            answers = [
                httpx.post(
                    f"{base}/api/v1/events",
                    json={"customer_id": "c1", "type": "page_view", "event_id": f"b{n}"},
                    headers=auth,
                    timeout=5,
                )
                for n in range(4)
            ]
            assert ws.delivery.event_intake.backlog() == (4, 4)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        _until(lambda: ws.delivery.event_intake.backlog() == (0, 0))
        assert sorted(_event_keys(ws)) == [f"api:b{n}" for n in range(4)]
    assert [r.status_code for r in answers] == [202] * 4


def test_a_journal_locked_past_the_wait_answers_503_with_retry_after(
    sqlite_workspace: Workspace,
) -> None:
    """The journal's own lock held elsewhere: the request being appended waits for it, and
    those queued behind it past the bounded wait are refused (not kept) with 503."""
    ws = sqlite_workspace
    key = new_api_key(ws, "shop")
    intake = ws.delivery.event_intake
    queue = intake.queue
    queue.wait_seconds = 0.2
    intake.journal.backlog()  # creates the journal file
    auth = {"Authorization": f"Bearer {key}"}
    holder = sqlite3.connect(intake.journal.path, isolation_level=None)
    with running_service(ws) as base:

        def send(n: int) -> httpx.Response:
            body = {"customer_id": "c1", "type": "page_view", "event_id": f"b{n}"}
            return httpx.post(f"{base}/api/v1/events", json=body, headers=auth, timeout=30)

        holder.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(send, 0)
            _until(lambda: queue.writing == 1)  # the appender waits for the lock with b0
            waiting = [pool.submit(send, n) for n in range(1, 4)]
            _until(lambda: queue.waiting == 3)
            time.sleep(queue.wait_seconds + 0.1)  # b1..b3 have waited past the bound
            holder.execute("ROLLBACK")
            answers = [first.result()] + [f.result() for f in waiting]
    holder.close()
    assert answers[0].status_code == 202
    assert [r.status_code for r in answers[1:]] == [503] * 3
    for r in answers[1:]:
        assert int(r.headers["Retry-After"]) >= 1
        assert "busy" in r.json()["detail"]
    assert _event_keys(ws) == ["api:b0"]  # refused means not kept


def test_a_full_queue_refuses_at_once_with_store_busy(sqlite_workspace: Workspace) -> None:
    intake = sqlite_workspace.delivery.event_intake
    queue, gate, sizes = _gated(intake)
    queue.max_pending = 5
    first = queue.submit([_record(sqlite_workspace, _view(0))])
    _until(lambda: bool(sizes))
    queued = queue.submit([_record(sqlite_workspace, _view(n)) for n in range(1, 5)])
    with pytest.raises(StoreBusy) as refused:
        queue.submit([_record(sqlite_workspace, _view(5)), _record(sqlite_workspace, _view(6))])
    assert refused.value.retry_after >= 1
    gate.set()
    assert first.result(10) == 1 and queued.result(10) == 4
    assert intake.apply_pending() == 5
    with sqlite_workspace.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 5
    queue.close()


def test_an_event_id_given_twice_in_one_request_is_one_new_event(workspace: Workspace) -> None:
    """The second copy is a duplicate: counted once, stored once, and its (later) time moves
    nothing."""
    earlier, later = T0 - timedelta(hours=2), T0 - timedelta(hours=1)
    batch = [_view(0, occurred_at=earlier), _view(1), _view(0, occurred_at=later)]
    intake = workspace.delivery.event_intake
    assert intake.submit(batch).result(10) == 3
    _until(lambda: intake.applied == 3)  # the applier started with the first submit
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


def test_an_entry_applied_again_after_a_crash_changes_nothing(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies between the store's commit and the journal's delete: the entries
    are applied again at the next start, and nothing is counted or moved twice."""
    intake = workspace.delivery.event_intake
    purchase = EventIn(
        customer_id="c1",
        type="purchase",
        event_id="p1",
        occurred_at=T0 - timedelta(hours=1),
        properties={"order_id": "o-1", "amount": "30.00"},
    )
    intake.journal.append([_record(workspace, _view(1), _view(8)), _record(workspace, purchase)])

    def crash(entries: Any) -> None:
        raise KeyboardInterrupt  # the process ends here, the store's transaction committed

    monkeypatch.setattr(intake.journal, "forget", crash)
    with pytest.raises(KeyboardInterrupt):
        intake.apply_pending()
    monkeypatch.undo()
    with workspace.engine.connect() as conn:
        before = conn.execute(select(contacts).order_by(contacts.c.id)).all()
    assert intake.backlog() == (2, 3)  # still in the journal
    assert intake.apply_pending() == 3
    assert intake.backlog() == (0, 0)
    with workspace.engine.connect() as conn:
        after = conn.execute(select(contacts).order_by(contacts.c.id)).all()
        orders_count = conn.execute(
            select(contacts.c.orders_count).where(contacts.c.customer_id == "c1")
        ).scalar_one()
    assert after == before and orders_count == 1
    assert sorted(_event_keys(workspace)) == ["api:v1", "api:v8"]


@pytest.mark.slow
def test_every_acknowledged_event_is_stored_once_across_kill_9(
    workspace: Workspace, tmp_path: Path
) -> None:
    """``winback serve`` killed (SIGKILL) while 4 clients send events: every event answered
    202 is in the store exactly once after the next start."""
    key = new_api_key(workspace, "shop")
    url = workspace.database_url if workspace.engine.dialect.name == "postgresql" else None
    acked: list[str] = []
    codes: list[int] = []
    lock, stop = threading.Lock(), threading.Event()
    with winback_serve(workspace.path, database_url=url, interval=30, log=tmp_path / "log") as s:

        def client(t: int) -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
                for n in range(100_000):
                    if stop.is_set():
                        return
                    ids = [f"k{t}-{n}-{i}" for i in range(1 if n % 2 else 20)]
                    batch = [
                        {"customer_id": f"c{(n + j) % 50}", "type": "page_view", "event_id": i}
                        for j, i in enumerate(ids)
                    ]
                    try:
                        if len(batch) == 1:
                            r = c.post(f"{s.base}/api/v1/events", json=batch[0])
                        else:
                            r = c.post(f"{s.base}/api/v1/events/batch", json={"events": batch})
                    except httpx.TransportError:
                        return
                    if r.status_code == 202:
                        with lock:
                            acked.extend(ids)
                    else:
                        codes.append(r.status_code)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        _until(lambda: len(acked) >= 3000 or len(codes) > 10, timeout=60)
        assert not codes, (codes[:10], s.log_tail())
        s.process.kill()
        s.process.wait(10)
        stop.set()
        for thread in threads:
            thread.join(20)
    journal = EventJournal(workspace.path / JOURNAL)
    left = journal.backlog()
    journal.close()
    workspace.delivery.event_intake.apply_pending()  # what the next start does first
    stored = Counter(_event_keys(workspace))
    missing = [i for i in acked if stored[f"api:{i}"] != 1]
    assert not missing, (len(missing), len(acked), left)
    assert max(stored.values()) == 1


def test_a_full_journal_refuses_more_until_the_store_catches_up(
    sqlite_workspace: Workspace,
) -> None:
    intake = sqlite_workspace.delivery.event_intake
    intake.max_backlog = 5
    intake.applies_here = False  # nothing applies the journal meanwhile
    assert intake.submit([_view(n) for n in range(3)]).result(10) == 3
    assert intake.submit([_view(n) for n in range(3, 5)]).result(10) == 2
    with pytest.raises(JournalFull) as full:
        intake.submit([_view(5)]).result(10)
    assert full.value.retry_after >= 1 and "5 accepted events" in str(full.value)
    assert intake.backlog() == (2, 5)  # the refused request was not kept
    assert intake.apply_pending() == 5
    assert intake.submit([_view(5)]).result(10) == 1


def test_one_record_appended_at_once_keeps_the_running_total_and_the_limit(
    tmp_path: Path,
) -> None:
    journal = EventJournal(tmp_path / "events.db")
    one, three = Record(T0, False, 1, b"{}"), Record(T0, True, 3, b"{}")
    assert journal.try_append([three], limit=5)
    assert journal.try_append([one], limit=5) and journal.try_append([one], limit=5)
    with pytest.raises(JournalFull) as full:
        journal.try_append([one], limit=5)
    assert "5 accepted events" in str(full.value) and full.value.retry_after >= 1
    assert journal.backlog() == (3, 5)  # the refused record was not kept
    journal.forget(journal.oldest(100))
    assert journal.try_append([Record(T0, True, 7, b"{}")], limit=5)  # alone: taken
    assert journal.try_append([one])  # no limit
    with sqlite3.connect(tmp_path / "events.db") as db:
        totals = [row[0] for row in db.execute("SELECT total FROM entries ORDER BY id")]
    assert totals == [7, 8]  # an emptied journal counts from 0 again
    journal.close()


def test_the_bearer_scheme_is_read_as_the_openapi_security_scheme_says(
    workspace: Workspace,
) -> None:
    key = new_api_key(workspace, "shop")
    body = {"customer_id": "c1", "type": "page_view", "event_id": "e1"}
    with running_service(workspace) as base:
        for header, status in (
            (f"bearer {key}", 202),
            (f"Bearer  {key}", 202),
            (f"Basic {key}", 401),
            ("Bearer", 401),
            (f"Bearer {key}x", 401),
        ):
            for path in ("/api/v1/events", "/api/v1/events/batch"):
                sent = {"events": [body]} if path.endswith("batch") else body
                r = httpx.post(f"{base}{path}", json=sent, headers={"Authorization": header})
                assert r.status_code == status, (header, path, r.text)
                if status == 401:
                    assert r.headers["WWW-Authenticate"] == "Bearer"
                    assert "api-keys create" in r.json()["detail"]


def test_many_events_at_once_are_stored_as_few_are_and_refusals_are_sqlalchemy_errors(
    workspace: Workspace,
) -> None:
    """Enough rows for the bulk path (PostgreSQL: COPY into a temporary table): the same
    rows, properties (JSON null included) and new-key count as one by one, twice in one
    transaction, and a refused row is SQLAlchemy's IntegrityError."""
    from sqlalchemy.exc import IntegrityError

    from winback.delivery.records import COPY_FROM_ROWS, record_events

    workspace.delivery.ingest([_view(0)])
    with workspace.engine.connect() as conn:
        contact = conn.execute(select(contacts.c.id)).scalar_one()
    at = T0 - timedelta(minutes=5)
    rows = [
        {
            "event_key": f"bulk:{n}",
            "contact_id": contact,
            "type": "page_view",
            "occurred_at": at + timedelta(seconds=n),
            "properties": None if n % 2 else {"n": n, "s": "é\t\\"},
            "message_id": f"m-{n}" if n % 3 == 0 else None,
            "machine": n % 5 == 0,
        }
        for n in range(COPY_FROM_ROWS + 10)
    ]
    with workspace.engine.begin() as conn:
        assert record_events(conn, rows[: COPY_FROM_ROWS + 5]) == COPY_FROM_ROWS + 5
        assert record_events(conn, rows) == 5  # the same transaction: only the new ones
    with workspace.engine.connect() as conn:
        stored = conn.execute(
            select(
                events.c.event_key,
                events.c.occurred_at,
                events.c.properties,
                events.c.message_id,
                events.c.machine,
            ).where(events.c.event_key.like("bulk:%"))
        ).all()
    assert sorted(tuple(r) for r in stored) == sorted(
        (r["event_key"], r["occurred_at"], r["properties"], r["message_id"], r["machine"])
        for r in rows
    )
    unknown = [{**r, "event_key": f"x{n}", "contact_id": 10**9} for n, r in enumerate(rows)]
    with pytest.raises(IntegrityError), workspace.engine.begin() as conn:
        record_events(conn, unknown)


def test_a_wait_for_the_write_lock_does_not_shrink_the_applier_slices(
    sqlite_workspace: Workspace,
) -> None:
    """The applier's first slice waits for another writer's long transaction: its slices
    are sized by the time it held the write lock, not by that wait (which would cut them to
    the smallest and make every event cost more while another writer is busy)."""
    from winback.delivery.event_intake import FIRST_APPLY_EVENTS
    from winback.store.slices import MIN_ROWS

    ws = sqlite_workspace
    intake = ws.delivery.event_intake
    intake.journal.append(  # one slice
        [
            _record(ws, *(_view(100 * e + n) for n in range(100)))
            for e in range(FIRST_APPLY_EVENTS // 100)
        ]
    )
    held = 1.5
    holder = sqlite3.connect(ws.path / "winback.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(held, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        started = time.monotonic()
        assert intake.apply_pending() == FIRST_APPLY_EVENTS
        assert time.monotonic() - started >= held  # it did wait
    finally:
        release.join()
        holder.close()
    sized_by_the_wait = max(MIN_ROWS, int(FIRST_APPLY_EVENTS * intake.pacer.budget / held))
    assert intake.pacer.rows("events") > 2 * sized_by_the_wait


def test_the_applier_takes_at_least_min_apply_events_a_transaction(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However short its time budget, the applier writes a large backlog in transactions of
    at least MIN_APPLY_EVENTS events (fewer transactions: fewer pages written an event)."""
    from winback.delivery.event_intake import MIN_APPLY_EVENTS
    from winback.store.slices import Pacer

    ws = sqlite_workspace
    intake = ws.delivery.event_intake
    intake.pacer = Pacer(1, first_rows=100)  # 1 ms: slices of 100 events by the budget alone
    intake.catch_up = Pacer(1, first_rows=100)
    intake.journal.append(
        [_record(ws, *(_view(100 * e + n) for n in range(100))) for e in range(30)]
    )
    sizes: list[int] = []
    write = intake._write

    def counted(conn: Any, items: list[EventIn], pacer: Pacer) -> None:
        sizes.append(len(items))
        write(conn, items, pacer)

    monkeypatch.setattr(intake, "_write", counted)
    assert intake.apply_pending() == 3_000
    assert sizes == [MIN_APPLY_EVENTS] * (3_000 // MIN_APPLY_EVENTS)
    assert len(_event_keys(ws)) == 3_000


def test_the_applier_catches_up_with_longer_slices_while_a_backlog_waits(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the journal holds more than CATCH_UP_SLICES of its slices, the applier sizes
    its transactions by its catch-up budget; then by its usual one again."""
    from winback.delivery.event_intake import CATCH_UP_FACTOR, CATCH_UP_SLICES, MIN_APPLY_EVENTS
    from winback.store.slices import Pacer

    ws = sqlite_workspace
    intake = ws.delivery.event_intake
    assert intake.catch_up.budget == pytest.approx(intake.pacer.budget * CATCH_UP_FACTOR)
    intake.pacer = Pacer(1, first_rows=MIN_APPLY_EVENTS)
    intake.catch_up = Pacer(60_000, first_rows=1_500)  # a minute: never shrinks here
    assert CATCH_UP_SLICES * MIN_APPLY_EVENTS < 3_000
    intake.journal.append(
        [_record(ws, *(_view(100 * e + n) for n in range(100))) for e in range(30)]
    )
    sizes: list[tuple[int, bool]] = []
    write = intake._write

    def counted(conn: Any, items: list[EventIn], pacer: Pacer) -> None:
        sizes.append((len(items), pacer is intake.catch_up))
        write(conn, items, pacer)

    monkeypatch.setattr(intake, "_write", counted)
    assert intake.apply_pending() == 3_000
    # 3,000 waiting: a catch-up slice of 1,500; then 1,500 wait, no more than 3 slices of 500.
    assert sizes == [(1_500, True), (500, False), (500, False), (500, False)]
    assert len(_event_keys(ws)) == 3_000
