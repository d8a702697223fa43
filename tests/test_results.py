"""Flow results: attribution of deliveries, opens, clicks, orders and revenue per step and
group on a small flow with known events, on SQLite and PostgreSQL; the CLI's JSON and
formula-safe CSV."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import String, cast, func, insert, literal, select, update
from typer.testing import CliRunner

from tests.conftest import T0
from tests.flows.helpers import add_order, entries, make_contacts
from winback.analytics.lift import in_control_group
from winback.cli import app
from winback.results.control import refresh as control_refresh
from winback.results.report import flow_results
from winback.store.schema import (
    control_group,
    events,
    flow_step_counts,
    flows,
    orders,
    outbox,
)
from winback.workspace import Workspace

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
_keys = itertools.count()

FLOW = """
name: Win test
trigger: {tag_added: go}
goal: {condition: {event: purchase, since: entry}, reason: purchased}
steps:
  - {name: Holdout, holdout: {share: 0.4}}
  - {name: Email 1, send: {template: w1}}
  - wait: 2d
  - {name: "=1+1", send: {template: w2}}
  - wait: 10d
"""


def deliver(ws: Workspace, at: datetime) -> None:
    """What delivery does for the messages queued so far: sent, with a message id."""
    with ws.engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.status == "pending")
            .values(status="sent", sent_at=at, message_id=literal("m") + cast(outbox.c.id, String))
        )


def event(
    ws: Workspace, cid: int, step: str, type_: str, at: datetime, machine: bool = False
) -> None:
    with ws.engine.begin() as conn:
        mid = conn.execute(
            select(outbox.c.message_id).where(outbox.c.contact_id == cid, outbox.c.step == step)
        ).scalar_one()
        conn.execute(
            insert(events).values(
                event_key=f"r{next(_keys)}", contact_id=cid, type=type_, occurred_at=at,
                properties={"flow": "win", "step": step}, message_id=mid, machine=machine,
            )
        )  # fmt: skip


def run_flow(ws: Workspace) -> tuple[list[int], list[int]]:
    """10 contacts through the flow with known events and orders; (treatment, holdout)."""
    people = make_contacts(ws, 10, at=T0 - 100 * DAY)
    (ws.path / "flows" / "win.yaml").write_text(FLOW, encoding="utf-8")
    ws.flows.enable("win", now=T0)
    ws.store.add_tag(people, "go", at=T0, source="test")
    ws.flows.tick(T0)
    state = entries(ws, "win")
    t = sorted(c for c in people if not state[c]["holdout"])
    h = sorted(c for c in people if state[c]["holdout"])
    assert len(t) >= 4 and len(h) >= 2
    deliver(ws, T0 + HOUR)
    add_order(ws, t[0], at=T0 - DAY, amount=999.0)  # before entering: never counted
    event(ws, t[0], "s1", "email_opened", T0 + 2 * HOUR)
    event(ws, t[0], "s1", "email_clicked", T0 + 2 * HOUR)
    event(ws, t[1], "s1", "email_opened", T0 + 2 * HOUR, machine=True)
    event(ws, t[2], "s1", "email_opened", T0 + 2 * HOUR, machine=True)
    event(ws, t[2], "s1", "email_opened", T0 + 3 * HOUR)
    event(ws, t[2], "s1", "email_unsubscribed", T0 + 3 * HOUR)
    event(ws, t[3], "s1", "email_bounced", T0 + 2 * HOUR)
    add_order(ws, t[0], at=T0 + DAY, amount=100.0)  # attributed to Email 1
    ws.flows.tick(T0 + 2 * DAY)  # t[0] leaves (goal) before the second email
    deliver(ws, T0 + 2 * DAY + HOUR)
    event(ws, t[1], "s3", "email_complained", T0 + 2 * DAY + 2 * HOUR)
    add_order(ws, h[0], at=T0 + 2 * DAY + 2 * HOUR, amount=30.0)
    add_order(ws, t[1], at=T0 + 3 * DAY - HOUR, amount=40.0)  # attributed to the 2nd email
    ws.flows.tick(T0 + 3 * DAY)  # t[1] and h[0] reach the goal
    ws.flows.tick(T0 + 13 * DAY)  # the others complete
    add_order(ws, t[2], at=T0 + 20 * DAY, amount=70.0)  # converted, past the 5-day window
    add_order(ws, t[3], at=T0 + 40 * DAY, amount=500.0)  # past the 30-day conversion window
    with ws.engine.begin() as conn:  # only counted purchases count, at their net amount
        conn.execute(
            insert(orders).values(order_id="cancelled", contact_id=t[2], ordered_at=T0 + DAY,
                                  amount=300, currency="USD", status="cancelled")
        )  # fmt: skip
        conn.execute(
            update(orders).where(orders.c.contact_id == t[0], orders.c.amount == 100)
            .values(refunded=25)
        )  # fmt: skip
    return t, h


def by_group(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["group"]: g for g in data["groups"]}


def test_attribution_counts_rates_and_revenue(workspace: Workspace) -> None:
    ws = workspace
    t, h = run_flow(ws)
    data = flow_results(ws, "win", as_of=T0 + 60 * DAY).to_dict()
    groups = by_group(data)
    treat, hold = groups["treatment"], groups["holdout"]
    assert (treat["contacts"], treat["converted"], treat["orders"]) == (len(t), 3, 3)
    assert treat["revenue"] == pytest.approx(185.0)
    assert treat["reactivated"] == 2  # t[0], t[1] reached the goal
    assert (hold["contacts"], hold["converted"], hold["revenue"], hold["reactivated"]) == (
        len(h), 1, pytest.approx(30.0), 1)  # fmt: skip
    assert treat["rates"]["conversion_rate"] == {
        "rate": pytest.approx(3 / len(t)), "count": 3, "denominator": "contacts", "of": len(t)}  # fmt: skip
    assert groups["control"]["contacts"] == 0 and data["lift"]["control"] is None

    steps = {s["step"]: s for s in data["steps"]}
    assert set(steps) == {"s1", "s3"}
    e1, e2 = steps["s1"], steps["s3"]
    assert e1["name"] == "Email 1" and e2["name"] == "=1+1"
    assert (e1["messages"], e1["sent"], e1["bounced"], e1["delivered"]) == (
        len(t), len(t), 1, len(t) - 1)  # fmt: skip
    assert (e1["opened"], e1["machine_opened"], e1["clicked"]) == (2, 2, 1)
    assert (e1["unsubscribed"], e1["complained"], e1["reactivated"]) == (1, 0, 2)
    assert (e1["orders"], e1["revenue"]) == (1, pytest.approx(75.0))
    assert e1["rates"]["open_rate"] == {
        "rate": pytest.approx(2 / (len(t) - 1)), "count": 2, "denominator": "delivered",
        "of": len(t) - 1}  # fmt: skip
    assert e1["rates"]["click_to_open_rate"]["rate"] == pytest.approx(0.5)
    # t[0] left before the second email.
    assert (e2["messages"], e2["delivered"], e2["complained"], e2["opened"]) == (
        len(t) - 1, len(t) - 1, 1, 0)  # fmt: skip
    assert (e2["orders"], e2["revenue"], e2["reactivated"]) == (1, pytest.approx(40.0), 1)

    conv = data["lift"]["holdout"]["conversion"]
    assert (conv["n_treatment"], conv["n_control"]) == (len(t), len(h))
    assert conv["difference"] == pytest.approx(3 / len(t) - 1 / len(h))
    assert conv["verdict"] == "not enough data yet"
    rev = data["lift"]["holdout"]["revenue_per_contact"]
    assert rev["treatment"] == pytest.approx(185 / len(t))
    assert rev["control"] == pytest.approx(30 / len(h))

    # A shorter conversion window, and a cohort window that leaves everyone out.
    ws.settings = ws.settings.model_copy(update={"conversion_window_days": 10})
    short = by_group(flow_results(ws, "win", as_of=T0 + 60 * DAY).to_dict())["treatment"]
    assert (short["converted"], short["revenue"]) == (2, pytest.approx(115.0))
    empty = flow_results(ws, "win", as_of=T0 + 60 * DAY, since=T0 + DAY).to_dict()
    assert by_group(empty)["treatment"]["contacts"] == 0 and empty["steps"] == []


def test_cli_json_and_formula_safe_csv(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    t, _ = run_flow(ws)
    w = str(ws.path)
    ws.close()
    runner = CliRunner()
    out = runner.invoke(app, ["flows", "results", "win", "-w", w, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert by_group(data)["treatment"]["orders"] == 3
    got = runner.invoke(app, ["flows", "results", "win", "-w", w, "--csv"])
    assert got.exit_code == 0, got.output
    rows = list(csv.reader(io.StringIO(got.stdout)))
    assert rows[0] == [
        "section",
        "step",
        "step_name",
        "arm",
        "metric",
        "value",
        "denominator",
        "of",
    ]
    assert all(not cell.startswith("=") for row in rows for cell in row)
    opened = [r for r in rows if r[1] == "s3" and r[4] == "complained"]
    assert opened == [["step", "s3", "'=1+1", "", "complained", "1", "", ""]]
    rate = [r for r in rows if r[1] == "s1" and r[4] == "open_rate"][0]
    assert rate[6:] == ["delivered", str(len(t) - 1)]
    text = runner.invoke(app, ["flows", "results", "win", "-w", w, "--until", "2026-02-28"])
    assert text.exit_code == 0 and "Email 1" not in text.stdout
    bad = runner.invoke(app, ["flows", "results", "win", "-w", w, "--since", "March"])
    assert bad.exit_code != 0


CONTROLLED = """
name: Controlled
trigger: {tag_added: go}
entry: {consent: email}
steps:
  - {name: Email 1, send: {channel: email, template: w1}}
  - wait: 1d
"""

TRANSACTIONAL = """
name: Receipt
trigger: {tag_added: go}
steps:
  - send: {channel: email, template: r, priority: transactional}
"""


def test_control_group_is_withheld_at_enrolment_and_compared(workspace: Workspace) -> None:
    ws = workspace
    ws.settings = ws.settings.model_copy(
        update={"control_group_share": 0.3, "control_group_salt": "test"}
    )
    people = make_contacts(ws, 30, at=T0 - 100 * DAY)
    members = {c for c in people if in_control_group(c, share=0.3, salt="test")}
    assert 0 < len(members) < 30
    for key, text in (("ctl", CONTROLLED), ("receipt", TRANSACTIONAL)):
        (ws.path / "flows" / f"{key}.yaml").write_text(text, encoding="utf-8")
        ws.flows.enable(key, now=T0)
    ws.store.add_tag(people, "go", at=T0, source="test")
    ws.flows.tick(T0)
    state = entries(ws, "ctl")
    withheld = {c for c, e in state.items() if e["exit_reason"] == "control_group"}
    assert withheld == members
    assert all(state[c]["holdout"] and state[c]["status"] == "exited" for c in members)
    with ws.engine.connect() as conn:
        sent = {
            int(c)
            for c in conn.execute(
                select(outbox.c.contact_id).where(outbox.c.flow == "ctl")
            ).scalars()
        }
        receipts = conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.flow == "receipt")
        ).scalar_one()
        counted = conn.execute(
            select(flow_step_counts.c.n)
            .join(flows, flows.c.id == flow_step_counts.c.flow_id)
            .where(flows.c.key == "ctl", flow_step_counts.c.step == "s0")
        ).scalar_one()
    assert sent == set(people) - members and counted == 30 - len(members)
    assert receipts == 30  # a transactional flow withholds no one
    buyer = sorted(members)[0]
    add_order(ws, buyer, at=T0 + DAY, amount=80.0)
    data = flow_results(ws, "ctl", as_of=T0 + 10 * DAY).to_dict()
    control = by_group(data)["control"]
    assert (control["contacts"], control["converted"], control["revenue"]) == (
        len(members), 1, pytest.approx(80.0))  # fmt: skip
    assert by_group(data)["treatment"]["contacts"] == 30 - len(members)
    lift = data["lift"]["control"]["conversion"]
    assert lift["control"] == pytest.approx(1 / len(members)) and lift["treatment"] == 0
    # A share of 0 ends the withholding.
    ws.settings = ws.settings.model_copy(update={"control_group_share": 0.0})
    assert control_refresh(ws.engine, ws.settings) == 0
    with ws.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(control_group)).scalar_one() == 0


AUTO = """
name: Auto winner
trigger: {tag_added: go}
steps:
  - split:
      winner: auto
      branches:
        - {name: a, weight: 1, steps: [{send: {template: a}}]}
        - {name: b, weight: 1, steps: [{send: {template: b}}]}
"""


def test_split_with_winner_auto_routes_new_entrants_once_declared(workspace: Workspace) -> None:
    ws = workspace
    ws.settings = ws.settings.model_copy(update={"winner_min_contacts": 5})
    first = make_contacts(ws, 30, at=T0 - 100 * DAY)
    (ws.path / "flows" / "auto.yaml").write_text(AUTO, encoding="utf-8")
    ws.flows.enable("auto", now=T0)
    ws.store.add_tag(first, "go", at=T0, source="test")
    ws.flows.tick(T0)
    state = entries(ws, "auto")
    drawn = {c: state[c]["branch"] for c in first}
    assert set(drawn.values()) == {"a", "b"}  # no winner yet: drawn by weight
    assert flow_results(ws, "auto", as_of=T0 + HOUR).to_dict()["experiments"][0]["winner"] is None
    for c in first:
        if drawn[c] == "a":
            add_order(ws, c, at=T0 + HOUR, amount=20.0)
    data = flow_results(ws, "auto", as_of=T0 + DAY).to_dict()
    (ab,) = data["experiments"]
    assert ab["status"] == "winner: a" and ab["kind"] == "split"
    later = make_contacts(ws, 10, at=T0, prefix="n")
    ws.store.add_tag(later, "go", at=T0 + DAY, source="test")
    ws.flows.tick(T0 + DAY)
    state = entries(ws, "auto")
    assert {state[c]["branch"] for c in later} == {"a"}
    assert {c: state[c]["branch"] for c in first} == drawn
