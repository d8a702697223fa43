"""Back-fill on enable: contacts whose qualifying event falls in the look-back enter as if
the flow had been on, each at the step their timing calls for, on the injected clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import T0
from tests.flows.helpers import (
    add_event,
    add_order,
    entries,
    entry_count,
    make_contacts,
    sent_to,
)
from winback.errors import DefinitionError
from winback.flows import backfill as bf
from winback.store.schema import tag_history
from winback.workspace import Workspace

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

FLOW = """
name: Two reminders
trigger: {event: product_view}
entry: {consent: email, reentry: after 30d, backfill: 14d}
steps:
  - send: {channel: email, template: day-0}
  - wait: 4d
  - send: {channel: email, template: day-4}
  - wait: 3d
  - add_tag: reminded
"""


def _write(ws: Workspace, key: str, text: str) -> None:
    folder = ws.flows.folder
    folder.mkdir(exist_ok=True)
    (folder / f"{key}.yaml").write_text(text, encoding="utf-8")


def _tagged(ws: Workspace, tag: str) -> set[int]:
    with ws.engine.connect() as conn:
        return {
            int(c)
            for c in conn.execute(
                tag_history.select()
                .with_only_columns(tag_history.c.contact_id)
                .where(tag_history.c.tag == tag)
            ).scalars()
        }


def test_each_contact_enters_at_the_step_its_timing_calls_for(workspace: Workspace) -> None:
    ws = workspace
    fresh, three, four_half, six, outside, twice = make_contacts(ws, 6, at=T0 - 100 * DAY)
    (no_consent,) = make_contacts(ws, 1, at=T0 - 100 * DAY, consent=False, prefix="n")
    for cid, ago in [
        (fresh, 12 * HOUR),
        (three, 3 * DAY),
        (four_half, 4 * DAY + 12 * HOUR),
        (six, 6 * DAY),
        (outside, 20 * DAY),
        (twice, 10 * DAY),
        (twice, 3 * DAY),
        (no_consent, DAY),
    ]:
        add_event(ws, cid, "product_view", at=T0 - ago)
    _write(ws, "remind", FLOW)

    assert ws.flows.enable("remind", now=T0) == 5
    assert ws.flows.enable("remind", now=T0) == 0  # enabled already: nothing more
    ws.flows.tick(T0)
    assert sent_to(ws, "remind") == {fresh: ["day-0"], four_half: ["day-4"]}

    ws.flows.tick(T0 + DAY)  # the day-4 step of those triggered 3 days before enable
    assert sent_to(ws, "remind") == {
        fresh: ["day-0"],
        four_half: ["day-4"],
        three: ["day-4"],
        twice: ["day-4"],
    }
    assert _tagged(ws, "reminded") == {six}  # both sends long past: only the tag at day 7

    for day in (3.5, 4, 8):
        ws.flows.tick(T0 + day * DAY)
    assert sent_to(ws, "remind") == {
        fresh: ["day-0", "day-4"],
        four_half: ["day-4"],
        three: ["day-4"],
        twice: ["day-4"],
    }
    state = entries(ws, "remind")
    assert outside not in state and no_consent not in state
    assert state[three]["path"] == "s0=late > s2=queued > s4=tagged"
    assert state[six]["path"] == "s0=late > s2=late > s4=tagged"
    assert state[fresh]["path"] == "s0=queued > s2=queued > s4=tagged"
    assert _tagged(ws, "reminded") == {fresh, three, four_half, six, twice}

    # Pausing and enabling with the same look-back again counts no event twice.
    ws.flows.pause("remind", now=T0 + 9 * DAY)
    assert ws.flows.enable("remind", now=T0 + 9 * DAY, backfill=14 * DAY) == 0
    assert entry_count(ws, "remind") == 5


def test_a_failed_backfill_leaves_nothing(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace
    a, b = make_contacts(ws, 2, at=T0 - 100 * DAY)
    add_event(ws, a, "product_view", at=T0 - 12 * HOUR)
    add_event(ws, b, "product_view", at=T0 - 3 * DAY)
    _write(ws, "remind", FLOW)
    real, calls = bf._insert, []

    def crash_on_second(*args: object) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("crash in the middle of the back-fill")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bf, "_insert", crash_on_second)
    with pytest.raises(RuntimeError):
        ws.flows.enable("remind", now=T0)
    assert entry_count(ws, "remind") == 0
    assert ws.flows.list()[0].status == "paused"
    monkeypatch.setattr(bf, "_insert", real)
    assert ws.flows.enable("remind", now=T0) == 2
    ws.flows.tick(T0)
    ws.flows.tick(T0 + DAY)
    assert sent_to(ws, "remind") == {a: ["day-0"], b: ["day-4"]}


def test_plan_walks_waits_sends_and_branches() -> None:
    import yaml

    from winback.flows.program import compile_program, parse_definition

    program = compile_program("x", parse_definition(yaml.safe_load(FLOW), path="x"))
    assert list(bf.describe(bf.plan(program, DAY))) == [
        "s0 at +0:00:00 for age in [0:00:00, 1 day, 0:00:00)",
        "s2 at +4 days, 0:00:00 for age in [1 day, 0:00:00, 5 days, 0:00:00)",
        "s4 at +7 days, 0:00:00 for age in [5 days, 0:00:00, 8 days, 0:00:00)",
    ]


def test_segment_and_schedule_flows_cannot_backfill(workspace: Workspace) -> None:
    ws = workspace
    ws.flows.add("reactivation", enable=False, now=T0)
    with pytest.raises(DefinitionError, match="include_existing"):
        ws.flows.enable("reactivation", now=T0, backfill=14 * DAY)


def test_second_purchase_and_browse_abandonment_backfill_on_add(workspace: Workspace) -> None:
    ws = workspace
    first_10, first_25, repeat, view_12h, view_36h, view_3d, bought = make_contacts(
        ws, 7, at=T0 - 100 * DAY
    )
    add_order(ws, first_10, at=T0 - 10 * DAY)
    add_order(ws, first_25, at=T0 - 25 * DAY)
    add_order(ws, repeat, at=T0 - 12 * DAY)
    add_order(ws, repeat, at=T0 - 5 * DAY)
    for cid, ago in [(view_12h, 12 * HOUR), (view_36h, 36 * HOUR), (view_3d, 3 * DAY)]:
        add_event(ws, cid, "product_view", at=T0 - ago)
    add_event(ws, bought, "product_view", at=T0 - 20 * HOUR)
    add_order(ws, bought, at=T0 - 10 * HOUR)

    ws.flows.add("second-purchase", now=T0)
    ws.flows.add("browse-abandonment", now=T0)
    ws.flows.tick(T0)
    # Viewed 36 h ago: the reminder was due 12 h ago, within a day: at once.
    assert sent_to(ws, "browse-abandonment") == {view_36h: ["browse-abandonment"]}
    ws.flows.tick(T0 + 12 * HOUR)
    assert sent_to(ws, "browse-abandonment") == {
        view_36h: ["browse-abandonment"],
        view_12h: ["browse-abandonment"],
    }
    browse = entries(ws, "browse-abandonment")
    assert view_3d not in browse  # due 2 days ago: later than a day
    assert browse[bought]["exit_reason"] == "purchased"  # bought after the view

    ws.flows.tick(T0 + 10 * DAY)
    assert sent_to(ws, "second-purchase") == {}
    ws.flows.tick(T0 + 11 * DAY)  # 21 days after the first order
    assert sent_to(ws, "second-purchase") == {first_10: ["second-purchase"]}
    second = entries(ws, "second-purchase")
    # The nudge of the order 25 days ago was due 4 days ago; the repeat buyer's latest
    # order is not a first one; the browser who bought 10 h ago waits for day 21.
    assert set(second) == {first_10, bought}
    assert second[bought]["status"] == "active"
    assert second[first_10]["path"] == "first-order=then > s2=queued"


def test_two_enables_at_once_backfill_once(workspace: Workspace) -> None:
    import threading

    ws = workspace
    people = make_contacts(ws, 30, at=T0 - 100 * DAY)
    for i, cid in enumerate(people):
        add_event(ws, cid, "product_view", at=T0 - (i % 6) * DAY - HOUR)
    _write(ws, "remind", FLOW)
    ws.flows.sync(T0)
    barrier, results, errors = threading.Barrier(2), [], []

    def enable() -> None:
        barrier.wait()
        try:
            results.append(ws.flows.enable("remind", now=T0))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=enable) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results)[0] == 0 and sum(results) == entry_count(ws, "remind") > 0
