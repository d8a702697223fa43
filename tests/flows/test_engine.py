"""Engine behaviour that the templates do not all show: A/B splits and variants, holdout,
pause, editing a running flow, idempotent ticks, batches."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import T0
from tests.flows.helpers import add_event, entries, make_contacts, sent_to
from winback.flows._sql import stable_uniform_py
from winback.flows.service import Flows
from winback.store.schema import flow_entries, flows, outbox
from winback.workspace import Workspace

DAY = timedelta(days=1)


def write_flow(ws: Workspace, key: str, text: str) -> Path:
    path = ws.path / "flows" / f"{key}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


AB = """
name: A/B test
trigger: {tag_added: go}
steps:
  - holdout: {share: 0.2}
  - split:
      branches:
        - {name: a, weight: 1, steps: [{send: {template: mail-a}}]}
        - {name: b, weight: 3, steps: [{send: {template: mail-b}}]}
  - send:
      variants:
        - {name: short, template: short, weight: 1}
        - {name: long, template: long, weight: 1}
"""


def test_split_holdout_and_variants_are_stable(workspace: Workspace) -> None:
    ws = workspace
    people = make_contacts(ws, 40, at=T0)
    write_flow(ws, "ab", AB)
    ws.flows.enable("ab", now=T0)
    ws.store.add_tag(people, "go", at=T0, source="test")
    ws.flows.tick(T0)
    with ws.engine.connect() as conn:
        rows = list(conn.execute(select(flow_entries.c.id, flow_entries.c.contact_id)))
    sent = sent_to(ws, "ab")
    state = entries(ws, "ab")
    held = 0
    for entry_id, cid in rows:
        holdout = stable_uniform_py(entry_id, "ab:s0") < 0.2
        branch = "a" if stable_uniform_py(entry_id, "ab:s1") < 0.25 else "b"
        variant = "short" if stable_uniform_py(entry_id, "ab:s2:variant") < 0.5 else "long"
        assert state[cid]["holdout"] is holdout
        assert state[cid]["branch"] == branch
        held += holdout
        expected = [] if holdout else [f"mail-{branch}", variant]
        assert sent.get(cid, []) == expected
    assert 0 < held < 40
    with ws.engine.connect() as conn:
        variants: dict[str | None, int] = dict(
            conn.execute(
                select(outbox.c.variant, func.count())
                .where(outbox.c.step == "s2")
                .group_by(outbox.c.variant)
            ).all()
        )
    assert set(variants) == {"short", "long"}
    stats = ws.flows.stats("ab")
    assert stats["holdout"] == held and stats["treatment"] == 40 - held


WAITING = """
name: Waiting
trigger: {tag_added: go}
steps:
  - id: hello
    send: {template: hello}
  - id: pause-here
    wait: 2d
  - id: bye
    send: {template: bye}
"""


def test_pause_stops_steps_and_enrolment(workspace: Workspace) -> None:
    ws = workspace
    first, late = make_contacts(ws, 2, at=T0)
    write_flow(ws, "waiting", WAITING)
    ws.flows.enable("waiting", now=T0)
    ws.store.add_tag([first], "go", at=T0, source="test")
    ws.flows.tick(T0)
    ws.flows.pause("waiting", now=T0)
    ws.store.add_tag([late], "go", at=T0 + DAY, source="test")
    ws.flows.tick(T0 + 3 * DAY)
    assert sent_to(ws, "waiting") == {first: ["hello"]}
    ws.flows.enable("waiting", now=T0 + 4 * DAY)
    ws.flows.tick(T0 + 4 * DAY)
    # Resumed: the due step runs; the tag added while paused enrolled no one.
    assert sent_to(ws, "waiting") == {first: ["hello", "bye"]}
    assert late not in entries(ws, "waiting")


@pytest.mark.slow
def test_editing_a_running_flow_keeps_or_exits_by_step_id(workspace: Workspace) -> None:
    ws = workspace
    a, b = make_contacts(ws, 2, at=T0)
    path = write_flow(ws, "waiting", WAITING)
    ws.flows.enable("waiting", now=T0)
    ws.store.add_tag([a], "go", at=T0, source="test")
    ws.flows.tick(T0)  # a waits at `bye` (after pause-here)
    # Insert a step before: ids are explicit, so `a` stays where it is.
    path.write_text(
        WAITING.replace("  - id: bye", "  - id: extra\n    add_tag: edited\n  - id: bye")
    )
    ws.flows.tick(T0 + DAY)
    assert entries(ws, "waiting")[a]["status"] == "active"
    ws.store.add_tag([b], "go", at=T0 + DAY, source="test")
    ws.flows.tick(T0 + DAY)
    # Remove the step `b` and `a` wait at: they exit with flow_changed.
    path.write_text(
        WAITING.replace(
            "  - id: bye\n    send: {template: bye}\n", "  - id: ciao\n    send: {template: ciao}\n"
        )
    )
    changes = ws.flows.sync(T0 + DAY)
    assert changes["waiting"].startswith("version 3")
    state = entries(ws, "waiting")
    assert state[a]["exit_reason"] == "flow_changed"
    assert state[b]["exit_reason"] == "flow_changed"
    ws.flows.tick(T0 + 5 * DAY)
    assert sent_to(ws, "waiting") == {a: ["hello"], b: ["hello"]}


WAIT_FOR = """
name: Wait for a click
trigger: {tag_added: go}
steps:
  - send: {template: ask}
  - wait_for: {event: {type: email_clicked, where: {link: offer}}, timeout: 2d}
    then: [{add_tag: clicked}]
    else: [{add_tag: timed_out}]
"""


@pytest.mark.slow
def test_wait_for_event_with_property_filter_and_timeout(workspace: Workspace) -> None:
    ws = workspace
    clicks, wrong_link, silent = make_contacts(ws, 3, at=T0)
    write_flow(ws, "click", WAIT_FOR)
    ws.flows.enable("click", now=T0)
    ws.store.add_tag([clicks, wrong_link, silent], "go", at=T0, source="test")
    ws.flows.tick(T0)
    add_event(ws, clicks, "email_clicked", at=T0 + DAY, link="offer")
    add_event(ws, wrong_link, "email_clicked", at=T0 + DAY, link="other")
    ws.flows.tick(T0 + DAY)
    assert ws.store.tags_of(clicks) == ["clicked", "go"]
    assert ws.store.tags_of(wrong_link) == ["go"]
    ws.flows.tick(T0 + 2 * DAY)
    assert ws.store.tags_of(wrong_link) == ["go", "timed_out"]
    assert ws.store.tags_of(silent) == ["go", "timed_out"]


@pytest.mark.slow
def test_batches_and_same_instant_idempotence(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    people = make_contacts(ws, 250, at=T0)
    write_flow(ws, "waiting", WAITING)
    flows = Flows(ws.engine, ws.settings, ws.clock, ws.path, segments=ws.segments, batch_size=7)
    flows.enable("waiting", now=T0)
    ws.store.add_tag(people, "go", at=T0, source="test")
    first = flows.tick(T0)
    assert first.enrolled == {"waiting": 250}
    assert flows.tick(T0).contact_steps == 0
    flows.tick(T0 + 2 * DAY)
    flows.tick(T0 + 2 * DAY)
    with ws.engine.connect() as conn:
        per_contact = conn.execute(
            select(outbox.c.contact_id, func.count()).group_by(outbox.c.contact_id)
        ).all()
    assert len(per_contact) == 250 and {n for _, n in per_contact} == {2}


def test_a_broken_edit_keeps_the_stored_version_running(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    (a,) = make_contacts(ws, 1, at=T0)
    path = write_flow(ws, "waiting", WAITING)
    ws.flows.enable("waiting", now=T0)
    ws.store.add_tag([a], "go", at=T0, source="test")
    ws.flows.tick(T0)
    path.write_text(WAITING.replace("wait: 2d", "wait: two days"))
    report = ws.flows.tick(T0 + 2 * DAY)
    assert report.errors and "flows/waiting.yaml" in report.errors[0]
    assert sent_to(ws, "waiting") == {a: ["hello", "bye"]}


CHAINED = """
name: Chained steps
trigger: {tag_added: go}
goal: {condition: {tag: done}, reason: done}
steps:
  - if: {tag: vip}
    then:
      - send: {template: vip-hello}
      - add_tag: done
      - send: {template: never-sent}
    else:
      - exit: not-vip
"""


def test_steps_taken_in_the_same_statements_keep_goals_and_paths(workspace: Workspace) -> None:
    """An ``if`` takes its ``then`` rows straight into the send that follows (one move for
    both), but never past a goal that the step before may have changed: ``add_tag: done``
    meets the goal, which is checked before the next send."""
    ws = workspace
    vip, plain = make_contacts(ws, 2, at=T0)
    ws.store.add_tag([vip], "vip", at=T0, source="test")
    write_flow(ws, "chained", CHAINED)
    ws.flows.enable("chained", now=T0)
    ws.store.add_tag([vip, plain], "go", at=T0, source="test")
    report = ws.flows.tick(T0)
    state = entries(ws, "chained")
    assert sent_to(ws, "chained") == {vip: ["vip-hello"]}
    assert state[vip]["exit_reason"] == "done"
    assert (
        state[vip]["path"] == "s0=then > s0.then.0=queued > s0.then.1=tagged > s0.then.2=goal:done"
    )
    assert state[plain]["exit_reason"] == "not-vip"
    assert state[plain]["path"] == "s0=else > s0.else.0=not-vip"
    assert report.steps == {
        "chained:s0": 2,
        "chained:s0.then.0": 1,
        "chained:s0.then.1": 1,
        "chained:s0.then.2": 1,
        "chained:s0.else.0": 1,
    }
    assert ws.flows.stats("chained")["outcomes_per_step"] == {
        "s0": {"then": 1, "else": 1},
        "s0.then.0": {"queued": 1},
        "s0.then.1": {"tagged": 1},
        "s0.then.2": {"goal:done": 1},
        "s0.else.0": {"not-vip": 1},
    }


def test_a_tick_runs_its_batches_on_one_connection_and_checkpoints_once(
    sqlite_workspace: Workspace,
) -> None:
    """SQLite: every batch of a tick commits on one held connection whose WAL
    autocheckpoint is raised (no checkpoint and file sync per batch); the tick ends with
    one checkpoint and gives the connection back with its setting restored."""
    from sqlalchemy import event

    from winback.store.slices import PASS_WAL_PAGES as TICK_WAL_PAGES

    ws = sqlite_workspace
    people = make_contacts(ws, 60, at=T0)
    write_flow(ws, "waiting", WAITING)
    flows = Flows(ws.engine, ws.settings, ws.clock, ws.path, segments=ws.segments, batch_size=7)
    flows.enable("waiting", now=T0)
    ws.store.add_tag(people, "go", at=T0, source="test")
    seen: list[tuple[int, int]] = []

    def on_commit(conn: Any) -> None:
        raw = conn.connection.driver_connection
        seen.append((id(raw), raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))

    event.listen(ws.engine, "commit", on_commit)
    try:
        report = flows.tick(T0, sync=False, refresh=False)
    finally:
        event.remove(ws.engine, "commit", on_commit)
    assert report.enrolled == {"waiting": 60}
    assert len(seen) > 60 // 7  # several batches, each its own transaction
    assert {c for c, _ in seen} == {seen[0][0]}
    assert {pages for _, pages in seen} == {TICK_WAL_PAGES}
    with ws.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        busy, log, done = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log == done  # nothing left to copy: the tick checkpointed


STARTS_WITH_SEND = """
name: Starts with a send
trigger: {tag_added: go}
entry: {consent: email}
steps:
  - send: {template: hello}
  - wait: 2d
  - send: {template: bye}
"""

NO_ENTRY_CONSENT = """
name: No consent at entry
trigger: {tag_added: go}
steps:
  - send: {template: hello}
  - send: {template: again}
"""


def test_entries_enrol_past_a_first_send_in_the_enrolment(workspace: Workspace) -> None:
    """A first ``send`` that every new entry takes alike runs in the enrolment itself: no
    update moves the entries off the first step, yet path, counters, messages and the
    wait that follows are those of the step loop."""
    from sqlalchemy import event

    ws = workspace
    people = make_contacts(ws, 30, at=T0)
    refused = make_contacts(ws, 5, at=T0, consent=False, prefix="r")
    write_flow(ws, "starts", STARTS_WITH_SEND)
    write_flow(ws, "loose", NO_ENTRY_CONSENT)
    ws.flows.enable("starts", now=T0)
    ws.flows.enable("loose", now=T0)
    ws.store.add_tag(people + refused, "go", at=T0, source="test")
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((" ".join(statement.split()), parameters))

    event.listen(ws.engine, "before_cursor_execute", seen)
    try:
        report = ws.flows.tick(T0, sync=False, refresh=False)
    finally:
        event.remove(ws.engine, "before_cursor_execute", seen)
    assert report.enrolled == {"starts": 30, "loose": 35}
    assert report.steps["starts:s0"] == 30
    starts = entries(ws, "starts")
    assert set(starts) == set(people)
    assert {(e["status"], e["step"], e["path"]) for e in starts.values()} == {
        ("active", "s2", "s0=queued")
    }
    with ws.engine.connect() as conn:
        wakes = conn.execute(
            select(func.min(flow_entries.c.wake_at), func.max(flow_entries.c.wake_at))
            .join(flows, flows.c.id == flow_entries.c.flow_id)
            .where(flows.c.key == "starts")
        ).one()
        keys = set(
            conn.execute(select(outbox.c.dedup_key).where(outbox.c.flow == "starts")).scalars()
        )
        ids = conn.execute(
            select(flow_entries.c.id)
            .join(flows, flows.c.id == flow_entries.c.flow_id)
            .where(flows.c.key == "starts")
        ).scalars()
        expected_keys = {f"starts:{i}:s0" for i in ids}
    assert tuple(wakes) == (T0 + 2 * DAY, T0 + 2 * DAY)
    assert len(keys) == 30 and keys == expected_keys
    assert ws.flows.stats("starts")["outcomes_per_step"]["s0"] == {"queued": 30}
    # No move recorded the first step alone (the starts entries were inserted past it;
    # the loose ones took both sends in one move).
    moves = [repr(p) for s, p in statements if s.startswith("UPDATE flow_entries")]
    assert moves and not [p for p in moves if "'s0=queued'" in p]
    # Their messages: one insert, which on SQLite does not test the consent that the
    # enrolment statement just required (PostgreSQL, read committed, tests it again).
    queued = [
        s for s, p in statements if s.startswith("INSERT INTO outbox") and "starts:" in repr(p)
    ]
    assert len(queued) == 1
    assert ("email_consent" in queued[0]) is (ws.engine.dialect.name != "sqlite")
    # Without consent at entry the first send is a step like any other (no_consent path).
    loose = entries(ws, "loose")
    assert {loose[c]["path"] for c in refused} == {"s0=no_consent > s1=no_consent"}
    assert {loose[c]["path"] for c in people} == {"s0=queued > s1=queued"}
    assert sent_to(ws, "loose") == {c: ["hello", "again"] for c in people}
    # The rest of the flow, and a second tick at the same instant, as usual.
    assert ws.flows.tick(T0, sync=False, refresh=False).contact_steps == 0
    ws.flows.tick(T0 + 2 * DAY, sync=False, refresh=False)
    assert sent_to(ws, "starts") == {c: ["hello", "bye"] for c in people}


CONSENT_THEN_SEND = """
name: Consent then send
trigger: {tag_added: go}
steps:
  - wait: 1d
  - if: {consent: email, tag: go}
    then: [{send: {template: hello}}]
    else: [{exit: no_consent}]
"""


def test_a_send_right_after_an_if_on_consent_does_not_test_it_again(
    workspace: Workspace,
) -> None:
    """SQLite: the ``then`` rows of an ``if`` that requires email consent are queued without
    a second consent test (one writer: it still holds in the same transaction); PostgreSQL
    tests it again. Either way only contacts with consent get the message."""
    from sqlalchemy import event

    ws = workspace
    people = make_contacts(ws, 8, at=T0)
    write_flow(ws, "ct", CONSENT_THEN_SEND)
    ws.flows.enable("ct", now=T0)
    ws.store.add_tag(people, "go", at=T0, source="test")
    ws.flows.tick(T0, sync=False, refresh=False)
    for c in people[:3]:
        ws.store.set_consent(c, "email", False, at=T0, source="test")
    inserts: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO outbox"):
            inserts.append(statement)

    event.listen(ws.engine, "before_cursor_execute", seen)
    try:
        ws.flows.tick(T0 + DAY, sync=False, refresh=False)
    finally:
        event.remove(ws.engine, "before_cursor_execute", seen)
    assert sent_to(ws, "ct") == {c: ["hello"] for c in people[3:]}
    paths = {c: e["path"] for c, e in entries(ws, "ct").items()}
    assert paths == {
        **{c: "s1=else" for c in people[:3]},
        **{c: "s1=then > s1.then.0=queued" for c in people[3:]},
    }
    assert len(inserts) == 1
    sqlite = ws.engine.dialect.name == "sqlite"
    assert ("email_consent" in inserts[0]) is not sqlite


def test_the_held_connection_of_a_tick_is_per_thread(sqlite_workspace: Workspace) -> None:
    import threading

    runner = sqlite_workspace.flows.runner
    other: list[Any] = []

    def elsewhere() -> None:
        with runner.transaction() as conn:
            other.append(conn)

    with runner.session():
        with runner.transaction() as first:
            pass
        with runner.transaction() as second:
            assert second is first  # one held connection in this thread
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert other and other[0] is not first
