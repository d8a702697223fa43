"""What would a flow have done? Run it in simulated time on a *copy* of the workspace.

The copy (SQLite: an online backup of the database file; PostgreSQL: a temporary database
made from the workspace's as a template, which needs no other session connected to it) is
advanced day by day with a fixed clock: segments refresh, triggers enrol, steps run, and
messages are counted instead of sent. When the shop was generated, the generator's
ground-truth response model (``ground_truth.csv``: ``p_buy_30d_no_contact``,
``p_buy_30d_if_contacted``, ``mean_spend`` per customer) decides who buys: each entrant buys
within 30 days of entering with the "if contacted" probability when the flow messaged them
and the "no contact" probability otherwise (holdout, no consent), on a day drawn uniformly
over those 30 days. The purchases are written into the copy as orders, so segments and goals
react to them like they would to real ones.

Messages are counted instead of sent, under the settings' quiet hours and frequency caps
(:func:`winback.flows.backtest.deliver`). A start before the store's last order or event
replays that history instead (:mod:`winback.flows.backtest`): conditions read it up to each
simulated day, its orders are the outcomes, and nothing is drawn.
"""

from __future__ import annotations

import csv
import random
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, and_, delete, func, insert, select, text, update
from sqlalchemy.engine import make_url

from winback.clock import FixedClock
from winback.errors import NotFound, WinbackError
from winback.flows.backtest import (
    Backtest,
    analyse_at_start,
    backtest,
    data_end,
    deliver,
    is_replay,
    needs_analysis,
)
from winback.flows.labels import step_labels
from winback.flows.program import compile_program, parse_definition
from winback.results.report import compute
from winback.segments.history import evaluating
from winback.store import activity, purchases
from winback.store.engine import make_engine, sqlite_url
from winback.store.schema import contacts, flow_entries, flows, orders, outbox

if TYPE_CHECKING:
    from winback.workspace import Workspace

RESPONSE_DAYS = 30


class SimulationUnavailable(WinbackError):
    """The workspace's store cannot be copied for a simulation."""


@dataclass
class Response:
    p_no_contact: float
    p_if_contacted: float
    mean_spend: float


@dataclass
class GroupResult:
    contacts: int = 0
    reactivated: int = 0
    revenue: float = 0.0


@dataclass
class SimulationResult:
    flow: str
    start: datetime
    days: int
    response_model: str | None
    entered: int = 0
    messages_per_step: dict[str, int] = field(default_factory=dict)
    #: Every step id of the flow with its label (flow order).
    step_names: dict[str, str] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    treatment: GroupResult = field(default_factory=GroupResult)
    holdout: GroupResult = field(default_factory=GroupResult)
    simulated_orders: int = 0
    backtest: Backtest | None = None
    #: The flow's results in the copy at the end (:meth:`FlowResults.to_dict`).
    results: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "start": self.start,
            "days": self.days,
            "response_model": self.response_model,
            "entered": self.entered,
            "messages": sum(self.messages_per_step.values()),
            "messages_per_step": self.messages_per_step,
            "step_names": self.step_names,
            "exits": self.exits,
            "treatment": vars(self.treatment),
            "holdout": vars(self.holdout),
            "simulated_orders": self.simulated_orders,
            "backtest": self.backtest.to_dict() if self.backtest is not None else None,
            "results": self.results,
        }


def load_ground_truth(path: Path) -> dict[str, Response]:
    out: dict[str, Response] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out[row["customer_id"]] = Response(
                p_no_contact=float(row["p_buy_30d_no_contact"] or 0),
                p_if_contacted=float(row["p_buy_30d_if_contacted"] or 0),
                mean_spend=float(row["mean_spend"] or 0),
            )
    return out


@contextmanager
def workspace_copy(ws: Workspace, start: datetime) -> Iterator[Workspace]:
    """A throwaway copy of the workspace's store, opened with a fixed clock at ``start``."""
    from winback.workspace import Workspace

    clock = FixedClock(start)
    if ws.engine.dialect.name == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="winback-sim-"))
        try:
            source = sqlite3.connect(str(make_url(ws.database_url).database))
            target = sqlite3.connect(str(folder / "winback.db"))
            with target:
                source.backup(target)
            source.close()
            target.close()
            settings = ws.settings.model_copy(
                update={"database_url": sqlite_url(folder / "winback.db")}
            )
            copy = Workspace(ws.path, settings, clock=clock)
            try:
                yield copy
            finally:
                copy.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    url = make_url(ws.database_url)
    name = f"winback_sim_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url.set(database="postgres").render_as_string(hide_password=False))
    try:
        ws.close()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            try:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
            except Exception as exc:
                raise SimulationUnavailable(
                    f"cannot copy PostgreSQL database {url.database!r} for the simulation "
                    f"(CREATE DATABASE ... TEMPLATE needs no other session on it): {exc}"
                ) from None
        settings = ws.settings.model_copy(
            update={"database_url": url.set(database=name).render_as_string(hide_password=False)}
        )
        copy = Workspace(ws.path, settings, clock=clock)
        try:
            yield copy
        finally:
            copy.close()
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


def simulate(
    ws: Workspace,
    flow: str,
    *,
    start: datetime,
    days: int,
    ground_truth: Path | None = None,
    seed: int = 1,
    holdout: float = 0.0,
    on_day: Callable[[datetime], None] | None = None,
) -> SimulationResult:
    """Run ``flow`` for ``days`` simulated days from ``start`` on a copy; the workspace itself
    is not changed. ``holdout`` > 0 holds that share of the entrants out (a holdout step put
    first, in the copy only) to compare treatment and holdout."""
    truth_file = ground_truth or next(
        (
            p
            for p in (ws.path / "ground_truth.csv", ws.path / "data" / "ground_truth.csv")
            if p.is_file()
        ),
        None,
    )
    if ground_truth is not None and not ground_truth.is_file():
        raise NotFound(f"no ground-truth file {ground_truth}")
    truth = load_ground_truth(truth_file) if truth_file is not None else {}
    rng = random.Random(seed)
    # Before the store's last recorded order or event, the simulation replays that history:
    # conditions read it up to each simulated day, and its orders are the outcomes.
    history_end = data_end(ws.engine)
    replay = is_replay(start, history_end)
    result = SimulationResult(
        flow=flow, start=start, days=days, response_model=str(truth_file) if truth_file else None
    )
    with workspace_copy(ws, start) as sim:
        sim.flows.sync(start)
        key = sim.flows._row(flow).key
        with sim.engine.begin() as conn:
            conn.execute(update(flows).where(flows.c.key != key).values(status="paused"))
        sim.flows.enable(key, now=start)
        with sim.engine.begin() as conn:
            if holdout > 0:
                definition = conn.execute(
                    select(flows.c.definition).where(flows.c.key == key)
                ).scalar_one()
                conn.execute(
                    update(flows)
                    .where(flows.c.key == key)
                    .values(definition=with_holdout(definition, holdout))
                )
        flow_id = int(sim.flows._row(key).id)
        analysis_note = None
        if replay:
            forget_after(sim.engine, key, flow_id, start)
            conditions = [d.condition for d in sim.segments.definitions().values()]
            if needs_analysis(conditions, sim.flows._row(key).definition):
                analysis_note = analyse_at_start(sim.analytics, start)
        pending: list[tuple[datetime, int, float]] = []
        decided: set[int] = set()
        for day in range(days + 1):
            now = start + timedelta(days=day)
            assert isinstance(sim.clock, FixedClock)
            sim.clock.set(now)
            due = [p for p in pending if p[0] <= now]
            pending = [p for p in pending if p[0] > now]
            result.simulated_orders += record_orders(
                sim.engine, due, currency=sim.settings.currency, now=now
            )
            # The first day at or after the history's end still replays: its triggers take
            # the recorded rows since the previous day by their time.
            past = replay and history_end is not None and now - timedelta(days=1) < history_end
            with evaluating(past):
                sim.flows.tick(now, sync=False)
            deliver(sim.engine, sim.settings, now)
            if truth and not replay:
                pending += _draw_purchases(sim.engine, flow_id, truth, decided, rng)
            if on_day is not None and day < days:
                on_day(now)
        end = start + timedelta(days=days)
        _report(sim.engine, key, flow_id, start, end, result)
        result.backtest = backtest(
            sim.engine,
            sim.analytics,
            flow_id=flow_id,
            model_name=sim.settings.analytics_model,
            start=start,
            end=end,
            data_end=history_end,
            treatment=(result.treatment.contacts, result.treatment.reactivated),
            holdout=(result.holdout.contacts, result.holdout.reactivated),
            truth={k: (r.p_no_contact, r.p_if_contacted) for k, r in truth.items()},
        )
        if analysis_note:
            result.backtest.note += f"; no analysis as of the start: {analysis_note}"
        definition = sim.flows._row(key).definition
        program = compile_program(key, parse_definition(definition, path=key))
        result.step_names = step_labels(program)
        result.results = compute(
            sim.engine, sim.settings, program, flow_id, as_of=end, since=start
        ).to_dict()
    return result


def forget_after(engine: Engine, key: str, flow_id: int, start: datetime) -> None:
    """A replay's copy holds what the live flow did after the start: its entries made and
    messages queued after it are removed, so that the replay decides them itself (an entry
    of today's run would otherwise block the replayed one, and be counted as its own)."""
    with engine.begin() as conn:
        conn.execute(delete(outbox).where(outbox.c.flow == key, outbox.c.created_at > start))
        conn.execute(
            delete(flow_entries).where(
                flow_entries.c.flow_id == flow_id, flow_entries.c.entered_at > start
            )
        )


def with_holdout(definition: dict[str, Any], share: float) -> dict[str, Any]:
    """The flow with a holdout step first; the other steps keep their ids (made explicit)."""
    steps = [
        step if "id" in step else {**step, "id": f"s{i}"}
        for i, step in enumerate(definition["steps"])
    ]
    return {**definition, "steps": [{"id": "sim-holdout", "holdout": {"share": share}}, *steps]}


def _draw_purchases(
    engine: Engine,
    flow_id: int,
    truth: dict[str, Response],
    decided: set[int],
    rng: random.Random,
) -> list[tuple[datetime, int, float]]:
    fe = flow_entries
    contacted = (
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.entry_id == fe.c.id)
        .correlate(fe)
        .scalar_subquery()
    )
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(fe.c.id, fe.c.contact_id, fe.c.entered_at, contacts.c.customer_id, contacted)
                .join(contacts, contacts.c.id == fe.c.contact_id)
                .where(fe.c.flow_id == flow_id)
                .order_by(fe.c.id)
            )
        )
    out = []
    for entry_id, contact_id, entered_at, customer_id, n_messages in rows:
        if entry_id in decided:
            continue
        decided.add(entry_id)
        response = truth.get(customer_id)
        if response is None:
            continue
        p = response.p_if_contacted if n_messages else response.p_no_contact
        if rng.random() < p:
            when = entered_at + timedelta(seconds=rng.uniform(0, RESPONSE_DAYS * 86400))
            amount = round(rng.gammavariate(2.0, max(response.mean_spend, 1.0) / 2.0), 2)
            out.append((when, int(contact_id), amount))
    return out


def record_orders(
    engine: Engine, due: list[tuple[datetime, int, float]], *, currency: str, now: datetime
) -> int:
    """Insert simulated orders (in ``currency``) and keep the contacts' purchase attributes
    current (stamped ``now``)."""
    if not due:
        return 0
    with engine.begin() as conn:
        conn.execute(
            insert(orders),
            [
                {
                    "order_id": f"sim-{uuid.uuid4().hex}",
                    "contact_id": cid,
                    "ordered_at": when,
                    "amount": amount,
                    "currency": currency,
                    "items": None,
                    "coupon": None,
                }
                for when, cid, amount in due
            ],
        )
        activity.apply_orders(conn, [(cid, when, amount) for when, cid, amount in due], now=now)
    return len(due)


def _report(
    engine: Engine,
    key: str,
    flow_id: int,
    start: datetime,
    end: datetime,
    result: SimulationResult,
) -> None:
    """The simulation's figures: the entries made and messages queued from ``start`` on."""
    fe = flow_entries
    with engine.connect() as conn:
        result.messages_per_step = {
            step: int(n)
            for step, n in conn.execute(
                select(outbox.c.step, func.count())
                .where(outbox.c.flow == key, outbox.c.created_at >= start)
                .group_by(outbox.c.step)
            )
        }
        result.exits = {
            (reason or "active"): int(n)
            for reason, n in conn.execute(
                select(fe.c.exit_reason, func.count())
                .where(fe.c.flow_id == flow_id, fe.c.entered_at >= start)
                .group_by(fe.c.exit_reason)
            )
        }
        bought = (
            select(
                orders.c.contact_id.label("cid"),
                fe.c.id.label("entry_id"),
                func.sum(purchases.net(orders)).label("revenue"),
            )
            .join(fe, and_(fe.c.contact_id == orders.c.contact_id, fe.c.flow_id == flow_id))
            .where(
                orders.c.ordered_at >= fe.c.entered_at,
                orders.c.ordered_at <= end,
                purchases.counted(orders),
            )
            .group_by(orders.c.contact_id, fe.c.id)
            .subquery()
        )
        for holdout, n, buyers, revenue in conn.execute(
            select(
                fe.c.holdout,
                func.count(fe.c.id),
                func.count(bought.c.entry_id),
                func.coalesce(func.sum(bought.c.revenue), 0),
            )
            .select_from(fe.outerjoin(bought, bought.c.entry_id == fe.c.id))
            .where(fe.c.flow_id == flow_id, fe.c.entered_at >= start)
            .group_by(fe.c.holdout)
        ):
            group = result.holdout if holdout else result.treatment
            group.contacts, group.reactivated, group.revenue = int(n), int(buyers), float(revenue)
        result.entered = result.treatment.contacts + result.holdout.contacts
