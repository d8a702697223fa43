"""Ticks write in slices: other writers get the store between them, a tick stops between two
slices and the next one resumes, and several PostgreSQL workers share the work, all with the
same results as one tick in one piece."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

import winback
from tests.conftest import T0
from tests.flows.helpers import make_contacts
from winback.clock import FixedClock
from winback.flows.engine import TickReport
from winback.store.schema import (
    contact_tags,
    contacts,
    flow_entries,
    flows,
    outbox,
    segment_membership,
    segments,
)
from winback.store.slices import Pacer
from winback.workspace import Workspace

DAY = timedelta(days=1)
DAYS = (0, 4, 7)
#: Many small slices (the pacer's floor is 100 rows) / one slice per pass.
SMALL = {"budget_ms": 1, "first_rows": 100}
WHOLE = {"budget_ms": 10**6, "first_rows": 10**9}


def pace(ws: Workspace, *, budget_ms: float, first_rows: int, gap: float = 0.0) -> None:
    ws.flows.runner.pacer = Pacer(budget_ms, gap=gap, first_rows=first_rows)
    ws.segments.pacer = Pacer(budget_ms, gap=gap, first_rows=first_rows)


def dormant(ws: Workspace, n: int) -> list[int]:
    """``n`` dormant customers with email consent, and the reference flow enabled."""
    people = make_contacts(
        ws,
        n,
        at=T0 - 400 * DAY,
        orders_count=1,
        first_purchase_at=T0 - 300 * DAY,
        last_purchase_at=T0 - 200 * DAY,
    )
    ws.flows.add("reactivation", now=T0 - DAY)
    ws.flows.pause("reactivation-companion")
    return people


def buy(ws: Workspace, people: list[int], day: int) -> None:
    """Every fifth (day 2) or seventh (day 5) contact buys: it leaves the segment."""
    step = 5 if day == 2 else 7
    at = T0 + day * DAY
    with ws.engine.begin() as conn:
        conn.execute(
            update(contacts)
            .where(contacts.c.id.in_(people[day::step]))
            .values(last_purchase_at=at, orders_count=2, updated_at=at)
        )


def week(ws: Workspace, people: list[int], *, stop_after: int | None = None) -> list[TickReport]:
    """The reference flow's week; with ``stop_after``, each tick is first stopped after
    that many commits and then run again at the same instant."""
    reports = []
    for day in DAYS:
        if day == 4:
            buy(ws, people, 2)
        if day == 7:
            buy(ws, people, 5)
        now = T0 + day * DAY
        ws.clock.set(now)  # type: ignore[attr-defined]
        if stop_after is not None:
            stopped = stopped_tick(ws, now, stop_after)
            assert stopped.stopped
            reports.append(stopped)
        reports.append(ws.flows.tick(now))
    return reports


def stopped_tick(ws: Workspace, now: Any, commits: int, *, refresh: bool = True) -> TickReport:
    stop = threading.Event()
    seen = [0]

    def on_commit(conn: Any) -> None:
        seen[0] += 1
        if seen[0] >= commits:
            stop.set()

    event.listen(ws.engine, "commit", on_commit)
    try:
        return ws.flows.tick(now, refresh=refresh, stop=stop)
    finally:
        event.remove(ws.engine, "commit", on_commit)


def state(ws: Workspace) -> dict[str, Any]:
    """Everything a week of the flow leaves, with the contacts as their customer ids."""
    fe, sm = flow_entries, segment_membership
    with ws.engine.connect() as conn:
        cid = dict(conn.execute(select(contacts.c.id, contacts.c.customer_id)).all())
        names = dict(conn.execute(select(segments.c.id, segments.c.name)).all())
        return {
            "outbox": sorted(
                (cid[r.contact_id], r.step, r.template, r.dedup_key.split(":")[-1])
                for r in conn.execute(select(outbox))
            ),
            "entries": sorted(
                (cid[r.contact_id], r.step, r.status, r.exit_reason, r.path, r.wake_at)
                for r in conn.execute(select(fe))
            ),
            "stints": sorted(
                (cid[r.contact_id], names[r.segment_id], r.entered_at, r.exited_at)
                for r in conn.execute(select(sm))
            ),
            "tags": sorted((cid[r.contact_id], r.tag) for r in conn.execute(select(contact_tags))),
        }


def twin(ws: Workspace, tmp_path: Path) -> Workspace:
    """A second workspace on a fresh store of the same kind."""
    if ws.engine.dialect.name == "sqlite":
        folder = tmp_path / "twin"
        winback.init(folder, environ={}).close()
        return winback.open(folder, clock=FixedClock(T0), environ={})
    from sqlalchemy.engine import make_url

    url = make_url(ws.database_url)
    name = f"{url.database}_twin"
    with ws.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE winback_template')
    env = {"WINBACK_DATABASE_URL": url.set(database=name).render_as_string(False)}
    folder = tmp_path / "twin"
    winback.init(folder, environ=env).close()
    return winback.open(folder, clock=FixedClock(T0), environ=env)


@pytest.mark.slow
def test_slices_give_the_same_week_as_whole_passes(workspace: Workspace, tmp_path: Path) -> None:
    """Segment refresh, enrolment and steps in slices of 100 rows, and stopped ticks resumed
    at the same instant: the same messages, entries, paths, stints and tags as passes in one
    transaction each."""
    whole = twin(workspace, tmp_path)
    try:
        pace(whole, **WHOLE)
        whole_reports = week(whole, dormant(whole, 700))
        expected = state(whole)
    finally:
        whole.close()
    assert all(r.writes.longest > 0 for r in whole_reports)

    sliced = workspace
    pace(sliced, **SMALL)
    people = dormant(sliced, 700)
    reports = week(sliced, people)
    assert state(sliced) == expected
    # Many more slices: 700 entries, 100 at a time, per step and per segment.
    sliced_counts = [r.writes.slices for r in reports]
    whole_counts = [r.writes.slices for r in whole_reports]
    assert sum(sliced_counts) > 2 * sum(whole_counts), (sliced_counts, whole_counts)
    assert all(s > w for s, w in zip(sliced_counts, whole_counts, strict=True))
    assert [r.contact_steps for r in reports] == [r.contact_steps for r in whole_reports]
    assert len(expected["outbox"]) > 700 and expected["tags"]


def test_a_stopped_tick_resumes_to_the_same_state(workspace: Workspace, tmp_path: Path) -> None:
    whole = twin(workspace, tmp_path)
    try:
        pace(whole, **WHOLE)
        week(whole, dormant(whole, 500))
        expected = state(whole)
    finally:
        whole.close()
    ws = workspace
    pace(ws, **SMALL)
    reports = week(ws, dormant(ws, 500), stop_after=4)
    stopped, resumed = reports[0::2], reports[1::2]
    # Stopped after the slice in progress: a few slices in, with work left for the rerun.
    assert all(r.stopped and r.writes.slices <= 5 for r in stopped)
    assert all(not r.stopped and r.writes.slices > 3 for r in resumed)
    assert state(ws) == expected


SCHEDULED = """
name: Scheduled
trigger:
  schedule: {every: day, at: "10:00", condition: {attribute: last_email_opened, is_unknown: true}}
steps:
  - send: {template: hello}
"""


def test_a_schedule_enrols_its_audience_in_slices(workspace: Workspace) -> None:
    """A schedule's audience is enrolled in windows of contact ids; a tick stopped half
    way resumes from its cursor: everyone once, and the firing is then recorded."""
    ws = workspace
    make_contacts(ws, 350, at=T0)
    (ws.path / "flows").mkdir(exist_ok=True)
    (ws.path / "flows" / "scheduled.yaml").write_text(SCHEDULED, encoding="utf-8")
    ws.flows.enable("scheduled", now=T0)
    pace(ws, **SMALL)
    ten = T0 + timedelta(hours=1)
    stopped = stopped_tick(ws, ten, 3, refresh=False)  # the sync, then two slices
    assert stopped.stopped and stopped.enrolled == {"scheduled": 200}
    with ws.engine.connect() as conn:
        cursor, fired = conn.execute(
            select(flows.c.watermark_id, flows.c.watermark_at).where(flows.c.key == "scheduled")
        ).one()
    assert cursor is not None and fired == T0  # the firing is still in progress
    rest = ws.flows.tick(ten, refresh=False)
    assert rest.enrolled == {"scheduled": 150}
    with ws.engine.connect() as conn:
        cursor, fired = conn.execute(
            select(flows.c.watermark_id, flows.c.watermark_at).where(flows.c.key == "scheduled")
        ).one()
        per_contact = conn.execute(
            select(outbox.c.contact_id, func.count()).group_by(outbox.c.contact_id)
        ).all()
    assert (cursor, fired) == (None, ten)
    assert len(per_contact) == 350 and {n for _, n in per_contact} == {1}
    assert ws.flows.tick(ten + timedelta(minutes=1), refresh=False).total_enrolled == 0


def test_a_writer_gets_in_between_the_slices_of_a_large_tick(sqlite_workspace: Workspace) -> None:
    """While a tick works through a first pass (refresh, enrolment, first send), a thread
    making small write transactions is never kept waiting much longer than a slice."""
    ws = sqlite_workspace
    people = dormant(ws, 20_000)
    budget = 40
    pace(ws, budget_ms=budget, first_rows=2_000, gap=0.002)
    waits: list[float] = []
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            started = time.perf_counter()
            with ws.engine.begin() as conn:
                conn.execute(
                    update(contacts)
                    .where(contacts.c.id == people[len(waits) % 100])
                    .values(first_name="x")
                )
            waits.append(time.perf_counter() - started)
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        started = time.perf_counter()
        report = ws.flows.tick(T0)
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        thread.join()
    assert report.enrolled == {"reactivation": 20_000}
    assert report.writes.slices > 20 and report.writes.longest < 1.0, report.writes
    # The writer got in between the slices all along (not only at the end of the tick), and
    # never waited much longer than the longest slice.
    assert len(waits) > 20, (len(waits), elapsed)
    assert max(waits) < report.writes.longest + 0.25, (max(waits), report.writes)


@pytest.fixture
def pg_workspace(workspace: Workspace) -> Workspace:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("several workers share a store on PostgreSQL")
    return workspace


@pytest.mark.slow
def test_two_workers_share_the_steps_on_postgresql(pg_workspace: Workspace, tmp_path: Path) -> None:
    """Two workers (each its own workspace and engine) tick the same store at the same
    instants: each moves a share of the entries, nothing is queued twice, every contact's
    path is in step order, and the end state is that of one worker."""
    alone = twin(pg_workspace, tmp_path)
    try:
        pace(alone, **WHOLE)
        week(alone, dormant(alone, 1_500))
        expected = state(alone)
    finally:
        alone.close()

    first = pg_workspace
    people = dormant(first, 1_500)
    second = winback.open(first.path, clock=FixedClock(T0), environ=_env(first))
    try:
        for ws in (first, second):
            pace(ws, budget_ms=1, first_rows=100)
        shares: list[list[int]] = []
        for day in DAYS:
            if day == 4:
                buy(first, people, 2)
            if day == 7:
                buy(first, people, 5)
            now = T0 + day * DAY
            reports: list[TickReport | BaseException] = [TickReport(), TickReport()]
            barrier = threading.Barrier(2)

            def work(
                i: int, ws: Workspace, now: Any = now, out: Any = reports, gate: Any = barrier
            ) -> None:
                ws.clock.set(now)  # type: ignore[attr-defined]
                gate.wait()
                try:
                    out[i] = ws.flows.tick(now)
                except BaseException as exc:  # reported below
                    out[i] = exc

            threads = [
                threading.Thread(target=work, args=(i, ws)) for i, ws in enumerate((first, second))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done = [r for r in reports if isinstance(r, TickReport)]
            assert len(done) == 2, reports
            shares.append([r.contact_steps for r in done])
            # Between them the two workers did everything due at that instant.
            rest = first.flows.tick(now, refresh=False)
            assert rest.contact_steps == 0 and rest.total_enrolled == 0
        got = state(first)
    finally:
        second.close()
    for part in expected:
        missing = sorted(set(expected[part]) - set(got[part]))[:5]
        extra = sorted(set(got[part]) - set(expected[part]))[:5]
        assert got[part] == expected[part], (part, missing, extra)
    steps = [s for day in shares[1:] for s in day]
    assert all(n > 0 for n in steps), shares  # both workers moved entries on days 4 and 7
    with first.engine.connect() as conn:
        per_key = conn.execute(
            select(outbox.c.dedup_key, func.count()).group_by(outbox.c.dedup_key)
        ).all()
    assert {n for _, n in per_key} == {1}
    order = ["1=queued", "3=then", "3=else", "4=queued", "6=then", "6=else", "7=tagged"]
    for *_, path, _ in got["entries"]:
        tokens = [t.split(":")[-1] for t in (path or "").split(" > ")]
        ranks = [order.index(t) if t in order else -1 for t in tokens]
        assert ranks == sorted(ranks), path


def _env(ws: Workspace) -> dict[str, str]:
    return {"WINBACK_DATABASE_URL": ws.database_url}
