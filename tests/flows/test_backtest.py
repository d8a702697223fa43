"""`winback simulate FLOW --start <past date>` replays the shop's recorded history: entrants
are who the flow would have taken then, and the orders recorded afterwards are who came back
anyway, beside the purchase model's no-contact expectation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from tests.conftest import T0
from tests.flows.helpers import add_order, make_contacts
from tests.flows.test_cli import invoke
from winback.flows.backtest import true_lift
from winback.flows.simulate import simulate
from winback.workspace import Workspace

DAY = timedelta(days=1)


def _history(ws: Workspace) -> None:
    """a0-a9: bought 400 and 160 days ago, never again; b0-b9: the same, and again 45 days
    ago; c0-c9: bought 400 days ago and again 20 days ago."""
    orders = {"a": [400, 160], "b": [400, 160, 45], "c": [400, 20]}
    for prefix, days_ago in orders.items():
        for cid in make_contacts(ws, 10, at=T0 - 500 * DAY, prefix=prefix):
            for days in days_ago:
                add_order(ws, cid, at=T0 - days * DAY)


@pytest.mark.slow
def test_replay_from_a_past_start(workspace: Workspace) -> None:
    ws = workspace
    _history(ws)
    # u0 had email consent at the start and withdrew it 30 days ago.
    (u0,) = make_contacts(ws, 1, at=T0 - 500 * DAY, prefix="u", consent=False)
    for days in (400, 160):
        add_order(ws, u0, at=T0 - days * DAY)
    ws.store.set_consent(u0, "email", True, at=T0 - 500 * DAY, source="signup")
    ws.store.set_consent(u0, "email", False, at=T0 - 30 * DAY, source="unsubscribe")
    ws.flows.add("reactivation", now=T0 - 100 * DAY)
    result = simulate(ws, "reactivation", start=T0 - 60 * DAY, days=30)
    # Dormant and with consent at the start: everyone (the c's order 20 days ago and u0's
    # withdrawal lie in the future then); read from the current columns, only the a's
    # would be.
    assert result.entered == 31
    assert result.messages_per_step["s0"] == 31
    # The b's bought 45 days ago (day 15 of the replay): they came back anyway; the c's
    # order comes after the end.
    assert result.treatment.reactivated == 10
    bt = result.backtest
    assert bt is not None and bt.replay and bt.came_back == 10
    assert bt.estimated_lift is None and bt.true_lift is None
    assert bt.baseline.entrants == 31
    assert bt.baseline.unavailable is None and 0 < bt.baseline.expected_buyers < 30
    # The fit on this tiny shop sits at the edge of the parameter space: the expected
    # orders still come out finite, and at least the expected buyers.
    assert bt.baseline.expected_buyers <= bt.baseline.expected_orders < 31
    data = json.loads(json.dumps(result.to_dict(), default=str))["backtest"]
    assert data["replay"] is True and data["came_back"] == 10
    assert data["baseline"]["entrants"] == 31


@pytest.mark.slow
def test_replay_on_the_cli(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    _history(ws)
    ws.flows.add("reactivation", now=T0 - 100 * DAY)
    w = str(ws.path)
    ws.close()
    text = invoke("simulate", "reactivation", "--start", "2025-12-31T09:00", "-w", w)
    assert "(outcomes: recorded orders)" in text
    assert "replay of recorded history (data until 2026-02-09)" in text
    assert "no-contact baseline (mbgnbd fitted up to the start)" in text


def test_true_lift_counts_the_uncontacted_as_zero() -> None:
    truth = {"x": (0.1, 0.4), "y": (0.2, 0.2), "z": (0.0, 0.5)}
    assert true_lift(truth, [("x", True), ("y", True), ("z", False)]) == pytest.approx(0.1)
    assert true_lift(truth, [("unknown", True)]) is None


@pytest.mark.slow
def test_true_lift_beside_the_estimate_from_the_end_of_history(
    sqlite_workspace: Workspace,
) -> None:
    """From the end of a generated shop's history, purchases follow the ground truth: half
    the entrants buy for certain when contacted and never otherwise (true lift +50%)."""
    ws = sqlite_workspace
    _history(ws)
    truth = ws.path / "ground_truth.csv"
    lines = ["customer_id,p_buy_30d_no_contact,p_buy_30d_if_contacted,mean_spend"]
    lines += [f"a{i},0.0,{1.0 if i < 5 else 0.0},80" for i in range(10)]
    truth.write_text("\n".join(lines) + "\n")
    ws.flows.add("reactivation", now=T0 - DAY)
    result = simulate(ws, "reactivation", start=T0, days=30, holdout=0.0)
    bt = result.backtest
    assert bt is not None and not bt.replay
    assert result.entered == 10 and result.treatment.reactivated == 5  # the a's are dormant
    assert bt.true_lift == pytest.approx(0.5)
    assert bt.estimated_lift is not None
    expected = bt.baseline.expected_buyers / bt.baseline.entrants
    assert bt.estimated_lift == pytest.approx(0.5 - expected)


def test_simulated_delivery_keeps_quiet_hours_and_caps(sqlite_workspace: Workspace) -> None:
    """Due marketing messages wait for the end of quiet hours (21:00-08:00) and for room
    under the cap (2 emails per 7 days) as the worker would; transactional ones do not; a
    send after the simulated instant (a copy of a live store) does not fill the cap."""
    from sqlalchemy import insert, select

    from winback.flows.backtest import deliver
    from winback.store.schema import outbox

    ws = sqlite_workspace
    x, y, z = make_contacts(ws, 3, at=T0 - 10 * DAY)
    rows = [
        (x, "marketing", "pending", None),
        (x, "marketing", "pending", None),
        (x, "marketing", "pending", None),
        (z, "marketing", "sent", T0 + DAY),
        (z, "marketing", "sent", T0 + 2 * DAY),
        (z, "marketing", "pending", None),
    ]
    late: list[tuple[int, str, str, datetime | None]] = [
        (y, "marketing", "pending", None),
        (y, "transactional", "pending", None),
    ]
    with ws.engine.begin() as conn:
        for i, (cid, priority, status, sent_at) in enumerate(rows + late):
            due = T0 - DAY if i < len(rows) else T0.replace(hour=21)
            conn.execute(
                insert(outbox).values(
                    dedup_key=f"k{i}",
                    contact_id=cid,
                    channel="email",
                    priority=priority,
                    status=status,
                    sent_at=sent_at,
                    not_before=due,
                    created_at=T0 - DAY,
                )  # fmt: skip
            )
    assert deliver(ws.engine, ws.settings, T0) == 3  # two for x, one for z
    night = T0.replace(hour=22)
    assert deliver(ws.engine, ws.settings, night) == 1  # y's transactional message
    with ws.engine.connect() as conn:
        left = {
            (r.contact_id, r.priority): r.not_before
            for r in conn.execute(select(outbox).where(outbox.c.status == "pending"))
        }
    assert left == {
        (x, "marketing"): T0 + 7 * DAY,
        (y, "marketing"): (T0 + DAY).replace(hour=8),
    }


def test_replay_analyses_the_shop_as_of_its_start(sqlite_workspace: Workspace) -> None:
    """A segment reading analytics, evaluated in a replay, reads an analysis made as of the
    start (one made later saw the future and is unknown then)."""
    from winback.clock import FixedClock
    from winback.flows.backtest import analyse_at_start, needs_analysis

    ws = sqlite_workspace
    _history(ws)
    (ws.path / "segments").mkdir(exist_ok=True)
    (ws.path / "segments" / "scored.yaml").write_text(
        "name: Scored\nattribute: rfm_segment\nhas_any_value: true\n", encoding="utf-8"
    )
    ws.analytics.analyze()  # today's analysis: every customer scored at T0
    conditions = [d.condition for d in ws.segments.definitions().values()]
    assert needs_analysis(conditions, {"steps": []})
    assert needs_analysis([], {"trigger": {"schedule": {"every": "day", "overdue": True}}})
    assert not needs_analysis(conditions[:1], {"steps": [{"send": {"template": "x"}}]})
    start = T0 - 60 * DAY
    assert ws.segments.refresh(start).get("Scored").members == 0
    past = ws.replace(clock=FixedClock(start))
    assert analyse_at_start(past.analytics, start) is None
    assert ws.segments.refresh(start).get("Scored").members == 30
