"""Several writers at once on one store: write transactions take the lock at their start and
wait for it (bounded), a store busy past the wait answers 503 (never 500), a one-click
unsubscribe is never lost, PostgreSQL conflicts are run again, and no update is lost."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection

from tests.delivery_support import add_contact, add_message, configure, smtp_server
from tests.web_support import new_api_key, running_service
from winback.delivery.coupons import assign
from winback.delivery.inbound import EventIn
from winback.delivery.links.tokens import TokenSigner
from winback.delivery.unsubscribes import (
    Unsubscribe,
    apply_pending_unsubscribes,
    keep,
    pending,
)
from winback.store.busy import StoreBusy, StoreConflict, retry_transient
from winback.store.engine import SQLiteConnection
from winback.store.schema import consent_log, contacts, coupons, events, suppressions
from winback.workspace import Workspace

postgres_only = pytest.mark.parametrize("workspace", ["postgres"], indirect=True)


def _sqlite_file(ws: Workspace) -> Path:
    return ws.path / "winback.db"


def _try_write_lock(ws: Workspace) -> bool:
    """Whether another connection could take the SQLite write lock right now."""
    raw = sqlite3.connect(_sqlite_file(ws), timeout=0, isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        raw.close()


def _with_busy_timeout(ws: Workspace, seconds: float) -> Workspace:
    """The same store with this bound: a workspace of its own, whose engine applies it."""
    return configure(ws, store_busy_timeout=seconds)


@contextmanager
def _store_locked(ws: Workspace) -> Iterator[None]:
    """Hold the store's write lock from another connection (readers go on)."""
    if ws.engine.dialect.name == "sqlite":
        raw = sqlite3.connect(_sqlite_file(ws), timeout=5, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        return
    with ws.engine.connect() as conn:
        conn.begin()
        conn.execute(text("SET LOCAL lock_timeout = 0"))
        # EXCLUSIVE: plain reads go on, every write to these tables waits.
        conn.execute(
            text("LOCK TABLE contacts, events, suppressions, consent_log IN EXCLUSIVE MODE")
        )
        try:
            yield
        finally:
            conn.rollback()


def _count(ws: Workspace, table: Any, *where: Any) -> int:
    with ws.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# -- SQLite: explicit transactions write, autobegun ones read ------------------------------------
def test_explicit_begin_takes_the_write_lock_and_autobegun_reads_do_not(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    with ws.engine.connect() as conn:
        assert isinstance(conn, SQLiteConnection)
        conn.execute(select(func.count()).select_from(contacts)).scalar_one()
        assert conn.in_transaction()
        assert _try_write_lock(ws), "an autobegun read must stay deferred (plain BEGIN)"
    with ws.engine.begin():
        assert not _try_write_lock(ws), "engine.begin() must send BEGIN IMMEDIATE"
    with ws.engine.connect() as conn, conn.begin():
        assert not _try_write_lock(ws), "conn.begin() must send BEGIN IMMEDIATE"
    assert _try_write_lock(ws)


def test_a_reader_then_writer_waits_for_the_lock_instead_of_failing(
    sqlite_workspace: Workspace,
) -> None:
    """A transaction that reads, then writes, while another writer holds the lock: with a
    deferred BEGIN it failed at once with SQLITE_BUSY (its snapshot went stale); begun
    IMMEDIATE it waits for the other writer and then succeeds."""
    ws = sqlite_workspace
    cid = add_contact(ws, "c1")
    holding, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with ws.engine.begin() as conn:
            conn.execute(update(contacts).values(first_name="other"))
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=other_writer)
    thread.start()
    assert holding.wait(5)
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    with ws.engine.begin() as conn:
        name = conn.execute(select(contacts.c.first_name).where(contacts.c.id == cid)).scalar()
        conn.execute(update(contacts).where(contacts.c.id == cid).values(last_name="mine"))
    waited = time.monotonic() - started
    thread.join()
    assert name == "other", "the write transaction began after the other one committed"
    assert 0.2 < waited < 5
    with ws.engine.connect() as conn:
        row = conn.execute(select(contacts).where(contacts.c.id == cid)).mappings().one()
    assert (row["first_name"], row["last_name"]) == ("other", "mine")


def test_writers_of_one_process_take_turns_with_a_writer_in_back_to_back_slices(
    sqlite_workspace: Workspace,
) -> None:
    """A writer that commits a 200 ms slice and begins the next one at once (an engine pass)
    lets a waiting writer in between two slices. SQLite's busy handler alone polls with
    sleeps and kept such a writer out until the slices ended; the process's write gate
    queues the writers in order."""
    ws = sqlite_workspace
    cid = add_contact(ws, "c1")
    done, slicing = threading.Event(), threading.Event()
    slices = 0

    def slicer() -> None:
        nonlocal slices
        deadline = time.monotonic() + 4
        while not done.is_set() and time.monotonic() < deadline:
            with ws.engine.begin() as conn:
                conn.execute(update(contacts).values(locale="x"))
                slicing.set()
                time.sleep(0.2)
            slices += 1

    thread = threading.Thread(target=slicer)
    thread.start()
    assert slicing.wait(5)
    waits = []
    for _ in range(3):
        started = time.monotonic()
        with ws.engine.begin() as conn:
            conn.execute(update(contacts).where(contacts.c.id == cid).values(last_name="mine"))
        waits.append(time.monotonic() - started)
    done.set()
    thread.join()
    assert max(waits) < 1.0, waits
    assert slices >= 2, "the slicer went on meanwhile"


def test_the_wait_at_the_gate_counts_against_the_bounded_wait(
    sqlite_workspace: Workspace,
) -> None:
    """Another process holds the store. A writer that queued 0.5 s at the gate behind another
    of its process waits for the other process only what is left of ``store_busy_timeout``,
    not the whole of it again."""
    ws = _with_busy_timeout(sqlite_workspace, 1)
    outcomes: list[tuple[str, float]] = []

    def write(name: str) -> None:
        started = time.monotonic()
        with pytest.raises(StoreBusy), ws.engine.begin():
            pass
        outcomes.append((name, time.monotonic() - started))

    with _store_locked(ws):
        first = threading.Thread(target=write, args=("first",))
        first.start()
        time.sleep(0.5)  # the first writer holds the gate, waiting for the other process
        write("second")
        first.join()
    waits = dict(outcomes)
    assert 0.9 <= waits["first"] <= 1.4
    assert 0.9 <= waits["second"] <= 1.4, waits  # 0.5 s at the gate, then 0.5 s for SQLite


def test_a_connection_dropped_inside_a_write_does_not_keep_the_gate(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    ws = _with_busy_timeout(ws, 3)
    add_contact(ws, "c1")

    def abandon() -> None:
        conn = ws.engine.connect()
        conn.begin()
        conn.execute(update(contacts).values(locale="lost"))

    abandon()
    gc.collect()
    started = time.monotonic()
    with ws.engine.begin() as conn:
        conn.execute(update(contacts).values(locale="kept"))
    assert time.monotonic() - started < 2
    with ws.engine.connect() as conn:
        assert conn.execute(select(contacts.c.locale)).scalar() == "kept"


@pytest.mark.slow
def test_a_lock_held_past_the_bounded_wait_raises_store_busy(workspace: Workspace) -> None:
    ws = workspace
    ws = _with_busy_timeout(ws, 0.2)
    add_contact(ws, "c1")
    with _store_locked(ws):
        started = time.monotonic()
        with pytest.raises(StoreBusy) as caught:
            ws.delivery.ingest([EventIn(customer_id="c1", type="page_view")])
        assert time.monotonic() - started < 3
        assert caught.value.retry_after == 1
        # Reads go on meanwhile.
        assert _count(ws, contacts) == 1
    assert ws.delivery.ingest([EventIn(customer_id="c1", type="page_view")]).new == 1


# -- many writers at once ---------------------------------------------------------------------
class _Crowd:
    """Threads that start at one barrier; what they raise is collected in ``errors``."""

    def __init__(self, targets: list[Callable[[], None]]) -> None:
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._start = threading.Barrier(len(targets))
        self._threads = [threading.Thread(target=self._guarded(fn)) for fn in targets]

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            self._start.wait()
            try:
                fn()
            except BaseException as exc:  # collected and asserted by the test
                with self._lock:
                    self.errors.append(exc)

        return run

    def run(self, timeout: float) -> None:
        for t in self._threads:
            t.start()
        for t in self._threads:
            t.join(timeout)


def test_concurrent_writers_lose_nothing(workspace: Workspace) -> None:
    """Event ingest from four threads, unsubscribes from a fifth and a writer that holds the
    store in 200 ms slices: nothing but StoreBusy may be raised, and every acknowledged
    write is stored."""
    ws = workspace
    n_contacts, per_thread = 20, 25
    ids = [add_contact(ws, f"c{i}", email=f"c{i}@example.com") for i in range(n_contacts)]
    messages = [add_message(ws, cid, key=f"m{cid}") for cid in ids]
    signer = TokenSigner(ws.settings.secret_key)
    acknowledged: list[str] = []
    unsubscribed: list[int] = []
    busy: list[StoreBusy] = []
    lock = threading.Lock()

    def ingest(worker: int) -> Callable[[], None]:
        def run() -> None:
            for n in range(per_thread):
                event_id = f"w{worker}-{n}"
                event = EventIn(
                    customer_id=f"c{n % n_contacts}", type="page_view", event_id=event_id
                )
                try:
                    ws.delivery.ingest([event])
                except StoreBusy as exc:
                    busy.append(exc)
                    continue
                with lock:
                    acknowledged.append(f"api:{event_id}")

        return run

    def unsubscribe() -> None:
        for cid, oid in zip(ids, messages, strict=True):
            ref = ws.delivery.tracker.unsubscribe(signer.sign("u", oid, cid), source="one-click")
            assert ref is not None
            unsubscribed.append(cid)

    def slices() -> None:
        for _ in range(5):
            with ws.engine.begin() as conn:
                conn.execute(update(contacts).where(contacts.c.id == ids[0]).values(locale="x"))
                time.sleep(0.2)

    crowd = _Crowd([ingest(w) for w in range(4)] + [unsubscribe, slices])
    crowd.run(timeout=120)
    assert crowd.errors == []
    assert busy == [], "the bounded wait (10 s) is far longer than any slice"
    apply_pending_unsubscribes(ws.engine, ws.store, ws.path)
    with ws.engine.connect() as conn:
        stored = set(conn.execute(select(events.c.event_key)).scalars())
        consent = dict(conn.execute(select(contacts.c.id, contacts.c.email_consent)).all())
    assert set(acknowledged) <= stored and len(acknowledged) == 4 * per_thread
    assert sorted(unsubscribed) == sorted(ids)
    assert all(consent[cid] is False for cid in ids)
    assert _count(ws, events, events.c.type == "email_unsubscribed") == n_contacts
    assert _count(ws, consent_log, consent_log.c.granted.is_(False)) == n_contacts


# -- HTTP answers ------------------------------------------------------------------------------
@pytest.mark.slow
def test_busy_store_answers_503_and_a_one_click_unsubscribe_is_kept(
    workspace: Workspace,
) -> None:
    ws = workspace
    ws = _with_busy_timeout(ws, 0.2)
    cid = add_contact(ws, "c1", email="ada@example.com")
    oid = add_message(ws, cid, key="first")
    token = TokenSigner(ws.settings.secret_key).sign("u", oid, cid)
    key = new_api_key(ws, "shop")
    with running_service(ws) as base:
        with _store_locked(ws):
            # The event API does not wait for the store: accepted into its journal.
            accepted = httpx.post(
                f"{base}/api/v1/events",
                json={"customer_id": "c1", "type": "page_view", "event_id": "seen"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert accepted.status_code == 202
            # A write straight to the store waits the bounded time, then 503.
            answer = httpx.post(
                f"{base}/api/v1/feedback-reports",
                json={"reports": [{"type": "bounce", "email": "other@example.com"}]},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert answer.status_code == 503
            assert int(answer.headers["Retry-After"]) >= 1
            body = answer.json()
            assert body["retry_after"] == int(answer.headers["Retry-After"])
            assert "busy" in body["detail"]
            assert answer.headers["X-Request-ID"]
            # The one-click unsubscribe is answered as done, and kept.
            done = httpx.post(
                f"{base}/u/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=10
            )
            assert done.status_code == 200
            assert [u.contact_id for _, u in pending(ws.path)] == [cid]
            # Nothing may be delivered meanwhile: the worker applies the inbox first.
            with pytest.raises(StoreBusy):
                ws.delivery.worker(channels={}).run_once()
        with ws.engine.connect() as conn:
            assert conn.execute(select(contacts.c.email_consent)).scalar() is True
        # The store is free again: the next delivery applies the kept unsubscribe first.
        add_message(ws, cid, "reactivation-2", key="second")
        with smtp_server() as (url, inbox, _):
            ws = configure(ws, smtp_url=url, quiet_hours="")
            report = ws.delivery.deliver_due()
        assert inbox.messages == []
        assert report.counts.get("sent", 0) == 0 and report.counts["skipped"] == 2
    assert pending(ws.path) == []
    with ws.engine.connect() as conn:
        assert conn.execute(select(contacts.c.email_consent)).scalar() is False
        sup = conn.execute(select(suppressions)).mappings().one()
    assert sup["address"] == "ada@example.com" and sup["reason"] == "unsubscribed"
    assert _count(ws, events, events.c.type == "email_unsubscribed") == 1
    assert _count(ws, events, events.c.event_key == "api:seen") == 1  # applied once free
    assert apply_pending_unsubscribes(ws.engine, ws.store, ws.path) == 0
    assert _count(ws, consent_log, consent_log.c.granted.is_(False)) == 1


def test_a_service_without_the_engine_applies_kept_unsubscribes_on_its_own(
    workspace: Workspace,
) -> None:
    """``serve --no-background`` (links on a host of their own): no delivery batch comes to
    apply the inbox, so the service's own loop does, soon after the store is free."""
    ws = workspace
    cid = add_contact(ws, "c1", email="ada@example.com")
    oid = add_message(ws, cid, key="first")
    kept = Unsubscribe(
        outbox_id=oid,
        contact_id=cid,
        email="ada@example.com",
        message_id=None,
        flow=None,
        step=None,
        source="one-click",
        at=ws.clock.now(),
    )
    keep(ws.path, kept)  # as the route does when the store stays busy
    with running_service(ws, background=False, inbox_interval=0.05):
        deadline = time.monotonic() + 10
        while pending(ws.path) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert pending(ws.path) == []
    with ws.engine.connect() as conn:
        assert conn.execute(select(contacts.c.email_consent)).scalar() is False
    assert _count(ws, suppressions, suppressions.c.address == "ada@example.com") == 1


@pytest.mark.slow
def test_an_unsubscribe_waiting_for_the_store_does_not_hold_up_the_service(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    ws = _with_busy_timeout(ws, 2)
    cid = add_contact(ws, "c1")
    token = TokenSigner(ws.settings.secret_key).sign("u", add_message(ws, cid), cid)
    answers: list[tuple[int, float]] = []

    def unsubscribe() -> None:
        began = time.monotonic()
        answer = httpx.post(f"{base}/u/{token}", data={"List-Unsubscribe": "One-Click"})
        answers.append((answer.status_code, time.monotonic() - began))

    with running_service(ws) as base, _store_locked(ws):
        waiting = threading.Thread(target=unsubscribe)
        waiting.start()
        time.sleep(0.05)
        started = time.monotonic()
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert time.monotonic() - started < 1.0
        waiting.join(10)
    [(status, seconds)] = answers
    assert status == 200 and len(pending(ws.path)) == 1
    # Kept after a quarter of a second of waiting, well before store_busy_timeout (2 s).
    assert 0.2 <= seconds < 1.5


@pytest.mark.slow
def test_kept_unsubscribes_are_applied_once_and_by_the_next_unsubscribe(
    sqlite_workspace: Workspace,
) -> None:
    ws = sqlite_workspace
    ws = _with_busy_timeout(ws, 0.1)
    signer = TokenSigner(ws.settings.secret_key)
    first, second = add_contact(ws, "c1"), add_contact(ws, "c2")
    m1, m2 = add_message(ws, first, key="a"), add_message(ws, second, key="b")
    with _store_locked(ws):
        assert ws.delivery.tracker.unsubscribe(signer.sign("u", m1, first), source="page")
        assert ws.delivery.tracker.unsubscribe(signer.sign("u", m1, first), source="page")
    kept = pending(ws.path)
    assert len(kept) == 2  # the same unsubscribe twice: applied once
    pending_one = kept[0][1]
    assert ws.delivery.tracker.unsubscribe(signer.sign("u", m2, second), source="one-click")
    assert pending(ws.path) == []
    with ws.engine.connect() as conn:
        consent = dict(conn.execute(select(contacts.c.id, contacts.c.email_consent)).all())
    assert consent == {first: False, second: False}
    assert _count(ws, consent_log) == 2
    assert _count(ws, events, events.c.type == "email_unsubscribed") == 2
    # A kept unsubscribe of a contact that is gone is dropped, not retried for ever (it
    # would hold up every delivery).
    keep(ws.path, replace(pending_one, contact_id=10**9, outbox_id=10**9))
    assert apply_pending_unsubscribes(ws.engine, ws.store, ws.path) == 1 and pending(ws.path) == []


@postgres_only
@pytest.mark.slow
def test_an_unsubscribe_is_kept_even_when_the_store_cannot_be_read(workspace: Workspace) -> None:
    """A migration holds a table in ACCESS EXCLUSIVE mode: not even the message can be looked
    up. The signed token says enough to keep the unsubscribe; the address is found when it is
    applied."""
    ws = workspace
    ws = _with_busy_timeout(ws, 0.2)
    cid = add_contact(ws, "c1", email="ada@example.com")
    token = TokenSigner(ws.settings.secret_key).sign("u", add_message(ws, cid), cid)
    with ws.engine.connect() as conn:
        conn.begin()
        conn.execute(text("LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE"))
        assert ws.delivery.tracker.unsubscribe(token, source="one-click") is not None
        conn.rollback()
    [(_, kept)] = pending(ws.path)
    assert (kept.contact_id, kept.email) == (cid, None)
    assert apply_pending_unsubscribes(ws.engine, ws.store, ws.path) == 1
    with ws.engine.connect() as conn:
        assert conn.execute(select(suppressions.c.address)).scalar() == "ada@example.com"
        assert conn.execute(select(contacts.c.email_consent)).scalar() is False


def test_a_bug_answers_500_with_a_request_id_that_is_logged(
    sqlite_workspace: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ws = sqlite_workspace
    key = new_api_key(ws, "shop")

    def broken(body: bytes, *, batch: bool) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(ws.delivery.event_intake, "accept", broken)
    auth = {"Authorization": f"Bearer {key}"}
    caplog.set_level(logging.ERROR, logger="winback.web")
    with running_service(ws) as base:
        given = httpx.post(
            f"{base}/api/v1/events",
            json={"customer_id": "c1", "type": "page_view"},
            headers={**auth, "X-Request-ID": "shop-42.a"},
        )
        made = httpx.post(
            f"{base}/api/v1/events",
            json={"customer_id": "c1", "type": "page_view"},
            headers={**auth, "X-Request-ID": "no spaces please"},
        )
        fine = httpx.get(f"{base}/healthz")
    assert given.status_code == 500
    assert given.json() == {"detail": "internal error", "request_id": "shop-42.a"}
    assert given.headers["X-Request-ID"] == "shop-42.a"
    assert made.status_code == 500
    rid = made.json()["request_id"]
    assert rid != "no spaces please" and len(rid) == 32 and made.headers["X-Request-ID"] == rid
    assert fine.headers["X-Request-ID"] and fine.headers["X-Request-ID"] != rid
    logged = [r for r in caplog.records if r.name == "winback.web"]
    assert [("shop-42.a" in r.getMessage(), rid in r.getMessage()) for r in logged] == [
        (True, False),
        (False, True),
    ]
    assert all(r.exc_info and "injected bug" in str(r.exc_info[1]) for r in logged)


def test_write_routes_document_the_503(sqlite_workspace: Workspace) -> None:
    from winback.web.app import create_app

    doc = create_app(sqlite_workspace).openapi()
    for path in ("/api/v1/events", "/api/v1/events/batch", "/api/v1/feedback-reports"):
        answer = doc["paths"][path]["post"]["responses"]["503"]
        assert "Retry-After" in answer["headers"]
    # /healthz documents its own 503 (engine or store down), without Retry-After.
    assert "headers" not in doc["paths"]["/healthz"]["get"]["responses"]["503"]


# -- PostgreSQL: conflicts run again, no lost update -----------------------------------------
@postgres_only
def test_a_postgres_deadlock_is_run_again(workspace: Workspace) -> None:
    ws = workspace
    a, b = add_contact(ws, "a"), add_contact(ws, "b")
    both_locked = threading.Barrier(2, timeout=10)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def crosswise(first: int, second: int, name: str) -> Callable[[], None]:
        def once() -> None:
            attempts.append(name)
            with ws.engine.begin() as conn:
                conn.execute(update(contacts).where(contacts.c.id == first).values(locale=name))
                if len(attempts) <= 2:  # only the first round deadlocks
                    both_locked.wait()
                conn.execute(update(contacts).where(contacts.c.id == second).values(locale=name))

        def run() -> None:
            try:
                retry_transient(once)
            except BaseException as exc:  # asserted below
                errors.append(exc)

        return run

    threads = [
        threading.Thread(target=crosswise(a, b, "x")),
        threading.Thread(target=crosswise(b, a, "y")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(attempts) == 3, "one of the two was chosen as the deadlock victim and ran again"
    with ws.engine.connect() as conn:
        cities = set(conn.execute(select(contacts.c.locale)).scalars())
    assert len(cities) == 1 and cities <= {"x", "y"}


@postgres_only
def test_a_postgres_serialization_failure_is_a_conflict(workspace: Workspace) -> None:
    ws = workspace
    cid = add_contact(ws, "a")
    with ws.engine.connect() as one, ws.engine.connect() as two:
        for conn in (one, two):
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.begin()
            conn.execute(select(contacts.c.locale).where(contacts.c.id == cid)).all()
        one.execute(update(contacts).where(contacts.c.id == cid).values(locale="one"))
        one.commit()
        with pytest.raises(StoreConflict):
            two.execute(update(contacts).where(contacts.c.id == cid).values(locale="two"))
        two.rollback()


def test_retry_transient_gives_up_as_store_busy() -> None:
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise StoreConflict("deadlock detected")

    with pytest.raises(StoreBusy) as caught:
        retry_transient(always, attempts=3, sleep=lambda _s: None)
    assert len(calls) == 3 and not isinstance(caught.value, StoreConflict)


def test_concurrent_unsubscribes_change_consent_once(workspace: Workspace) -> None:
    """Two transactions withdraw the same consent at once, the second while the first has
    not committed: exactly one changes it and logs it (a read then a write lets both
    through on PostgreSQL: both read "granted" before either commits)."""
    ws = workspace
    cid = add_contact(ws, "c1")
    second: list[bool] = []

    def withdraw() -> None:
        with ws.engine.begin() as conn:
            second.append(
                ws.store.set_consent(cid, "email", False, at=ws.clock.now(), source="b", conn=conn)
            )

    with ws.engine.connect() as first:
        first.begin()
        assert ws.store.set_consent(cid, "email", False, at=ws.clock.now(), source="a", conn=first)
        thread = threading.Thread(target=withdraw)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second writer waits for the first one's lock"
        first.commit()
    thread.join(10)
    assert second == [False]
    with ws.engine.connect() as conn:
        log = conn.execute(
            select(consent_log.c.source).where(consent_log.c.contact_id == cid)
        ).all()
    assert [tuple(r) for r in log] == [("a",)]


def test_two_soft_bounces_at_once_reach_the_limit(workspace: Workspace) -> None:
    """With a limit of two, two soft bounces recorded at once (the second while the first
    has not committed) suppress the address: neither may count only itself."""
    from winback.delivery.reports import policy_of
    from winback.delivery.reports.parse import FeedbackIn, from_json
    from winback.delivery.reports.record import record

    ws = workspace
    ws = configure(ws, soft_bounce_limit=2)
    add_contact(ws, "c1", email="ada@example.com")
    policy = policy_of(ws.settings)

    def bounce(conn: Connection, name: str) -> Any:
        item = FeedbackIn(type="bounce", email="ada@example.com", status="4.2.2", id=name)
        return record(conn, [from_json(item)], now=ws.clock.now(), policy=policy)

    second: list[Any] = []

    def other() -> None:
        with ws.engine.begin() as conn:
            second.append(bounce(conn, "b"))

    with ws.engine.connect() as first:
        first.begin()
        assert bounce(first, "a").soft_bounces == 1
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.5)
        first.commit()
    thread.join(10)
    assert second[0].soft_bounces == 1
    assert _count(ws, suppressions) == 1


# -- coupons ----------------------------------------------------------------------------------
def test_concurrent_coupon_assignment_gives_each_message_one_code(workspace: Workspace) -> None:
    ws = workspace
    ids = [add_contact(ws, f"c{i}") for i in range(6)]
    Wanted = list[tuple[int, int, str | None]]
    generated: Wanted = [(add_message(ws, cid, key=f"g{cid}"), cid, None) for cid in ids]
    pooled: Wanted = [(add_message(ws, cid, key=f"p{cid}"), cid, "vip") for cid in ids]
    with ws.engine.begin() as conn:
        conn.execute(
            coupons.insert(),
            [{"code": f"VIP{i}", "pool": "vip", "created_at": ws.clock.now()} for i in range(6)],
        )
    start = threading.Barrier(4)
    results: list[dict[int, str]] = []
    errors: list[BaseException] = []

    def assigner(wanted: list[tuple[int, int, str | None]]) -> Callable[[], None]:
        def assign_in(conn: Connection) -> dict[int, str]:
            return assign(conn, wanted, pattern="T-{RANDOM1}", at=ws.clock.now())

        def run() -> None:
            start.wait()
            try:

                def once() -> dict[int, str]:
                    with ws.engine.begin() as conn:
                        return assign_in(conn)

                results.append(retry_transient(once))
            except BaseException as exc:  # asserted below
                errors.append(exc)

        return run

    # Twice the same messages (a resend racing the first send), and both pools.
    jobs = [generated, generated, pooled[:3], pooled[3:]]
    threads = [threading.Thread(target=assigner(job)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(coupons.c.outbox_id, coupons.c.code).where(coupons.c.outbox_id.is_not(None))
        ).all()
    recorded = {int(oid): code for oid, code in rows}
    assert len(rows) == 12 and len(set(recorded.values())) == 12
    for result in results:
        assert all(recorded[oid] == code for oid, code in result.items())
    assert {recorded[oid] for oid, _, _ in pooled} == {f"VIP{i}" for i in range(6)}
