"""Backtests: a flow simulated from a past start on the shop's real history, and what the
purchase model expected of its entrants without contact.

A simulation whose start lies before the last order or event of the store is a **replay**:
every day, segments and the flow's conditions are evaluated from the rows stamped at or
before that day (:mod:`winback.segments.history`), so entrants are who the flow would have
taken then; caps and quiet hours apply as configured. The orders recorded after each entry
are what the entrant did without the flow (it did not run then): they "came back anyway".

The **no-contact baseline** is the workspace's purchase model (setting ``analytics_model``)
fitted on the orders up to the start: for an entrant with ``x`` repeat purchases, recency
``t_x`` and age ``T`` at the start, the expected purchases between entry and the end of the
simulation, ``E[Y(end - start)] - E[Y(entry - start)]``, and the probability of at least one,
``P(alive) · (1 - ((α+T)/(α+T+t))^(r+x))`` (the rate's gamma posterior; dropping out during
the window is ignored, so it is slightly high for long windows). Where the model's series
is not finite (a fit at the edge of its parameter space), expected purchases fall back to
``P(alive) · (r+x)/(α+T) · t``.

With the generator's ground truth (``ground_truth.csv``, whose probabilities describe the 30
days after the generated history's end), the **true lift** of a simulation starting at that
end is ``mean(p_if_contacted - p_no_contact)`` over the contacted entrants (0 for the others),
printed beside the estimate: the treatment's reactivation rate minus the holdout's, or minus
the model's baseline when there is no holdout. A replay has no true lift: its outcomes are
the real history, in which the flow did not run.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, Engine, func, select, update

from winback.analytics import analysis as an
from winback.analytics._fit import NotEnoughData
from winback.analytics.summary import summary_data
from winback.channels import kind_of
from winback.clock import as_utc
from winback.config import Settings
from winback.delivery.worker.policies import (
    cap_next_allowed,
    parse_caps,
    parse_quiet_hours,
    recent_sends,
    zone_of,
)
from winback.errors import WinbackError
from winback.segments.history import sources
from winback.segments.model import Condition
from winback.store.schema import ANALYTICS_COLUMNS, contacts, events, flow_entries, orders, outbox

if TYPE_CHECKING:
    from winback.analytics.service import Analytics


@dataclass
class Baseline:
    """What the purchase model expected of the entrants without contact."""

    model: str | None
    entrants: int = 0
    expected_buyers: float = 0.0
    expected_orders: float = 0.0
    #: Why there is no model expectation (too few customers before the start, ...).
    unavailable: str | None = None


@dataclass
class Backtest:
    """A simulation's comparison with the shop's history and, for a generated shop, its
    ground truth."""

    replay: bool
    data_end: datetime | None
    #: Entrants who bought after entering, by the end (real orders in a replay).
    came_back: int
    baseline: Baseline
    estimated_lift: float | None = None
    true_lift: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_end"] = self.data_end.isoformat() if self.data_end else None
        return out


def data_end(engine: Engine) -> datetime | None:
    """The instant of the latest order or event in the store (None: none)."""
    with engine.connect() as conn:
        latest = conn.execute(
            select(
                select(func.max(orders.c.ordered_at)).scalar_subquery(),
                select(func.max(events.c.occurred_at)).scalar_subquery(),
            )
        ).one()
    moments = [as_utc(v) for v in latest if isinstance(v, datetime)]
    return max(moments) if moments else None


def is_replay(start: datetime, end: datetime | None) -> bool:
    """Whether a simulation from ``start`` replays recorded history."""
    return end is not None and as_utc(start) < end


def needs_analysis(conditions: list[Condition], flow_definition: Mapping[str, Any]) -> bool:
    """Whether a replay must analyse the shop as of its start: a segment or the flow reads
    an analytics column (P(alive), RFM, days overdue, ...) or the flow's schedule picks
    overdue customers."""
    if "analytics" in sources(conditions)["other"]:
        return True
    text = json.dumps(flow_definition)
    names = (*ANALYTICS_COLUMNS, "overdue")
    return any(re.search(rf'"{name}"', text) for name in names)


def analyse_at_start(analytics: Analytics, start: datetime) -> str | None:
    """Write an analysis as of ``start`` into the simulation's copy (stamped at ``start``,
    so the history path reads it from then on); returns why it could not be made."""
    try:
        analytics.analyze(as_of=as_utc(start).date(), holdout=False)
    except WinbackError as exc:
        return str(exc)
    return None


def deliver(engine: Engine, settings: Settings, now: datetime) -> int:
    """The simulation's delivery: due messages count as sent at ``now``, except marketing
    messages that the worker would defer, which wait (``not_before``) for the end of the
    contact's quiet hours or for room under the channel's frequency cap, and count from the
    first simulated day after that. Only sends up to ``now`` fill a cap (a copy of a live
    store also holds later ones). Returns how many were sent."""
    caps = parse_caps(settings.frequency_caps)
    quiet = parse_quiet_hours(settings.quiet_hours)
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                outbox.c.id,
                outbox.c.contact_id,
                outbox.c.channel,
                outbox.c.priority,
                contacts.c.timezone,
            )
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .where(outbox.c.status == "pending", outbox.c.not_before <= now)
            .order_by(outbox.c.not_before, outbox.c.id)
        ).all()
        longest = max((c.window for c in caps.values()), default=timedelta(0))
        marketing = [int(r.contact_id) for r in rows if r.priority == "marketing"]
        recent = recent_sends(conn, marketing, caps, now - longest) if marketing else {}
        sent: list[int] = []
        waiting: dict[datetime, list[int]] = defaultdict(list)
        for r in rows:
            key = (int(r.contact_id), str(r.channel))
            if r.priority == "marketing":
                kind = kind_of(str(r.channel))
                later = None
                if quiet is not None and kind is not None and kind.personal:
                    later = quiet.next_allowed(now, zone_of(r.timezone, settings.tz))
                cap = caps.get(str(r.channel))
                if later is None and cap is not None:
                    before = [t for t in recent.get(key, []) if as_utc(t) <= now]
                    later = cap_next_allowed([as_utc(t) for t in before], cap, now)
                if later is not None:
                    waiting[later].append(int(r.id))
                    continue
                recent.setdefault(key, []).insert(0, now)
            sent.append(int(r.id))
        for i in range(0, len(sent), 900):
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(sent[i : i + 900]))
                .values(status="sent", sent_at=now)
            )
        for later, ids in waiting.items():
            for i in range(0, len(ids), 900):
                conn.execute(
                    update(outbox).where(outbox.c.id.in_(ids[i : i + 900])).values(not_before=later)
                )
    return len(sent)


def entrants(
    conn: Connection, flow_id: int, since: datetime
) -> list[tuple[int, str, datetime, bool, bool]]:
    """``(contact_id, customer_id, entered_at, holdout, contacted)`` of every entry of the
    flow made at or after ``since`` (the simulation's start)."""
    fe = flow_entries
    contacted = (
        select(func.count())
        .select_from(outbox)
        .where(outbox.c.entry_id == fe.c.id)
        .correlate(fe)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(fe.c.contact_id, contacts.c.customer_id, fe.c.entered_at, fe.c.holdout, contacted)
        .join(contacts, contacts.c.id == fe.c.contact_id)
        .where(fe.c.flow_id == flow_id, fe.c.entered_at >= since)
        .order_by(fe.c.id)
    )
    return [(int(c), str(k), as_utc(at), bool(h), bool(n)) for c, k, at, h, n in rows]


def baseline(
    analytics: Analytics,
    model_name: str,
    start: datetime,
    end: datetime,
    entries: list[tuple[int, datetime]],
) -> Baseline:
    """The purchase model's no-contact expectation for ``entries`` (contact id, entry time)
    between entry and ``end``, fitted on the orders up to ``start``."""
    result = Baseline(model=model_name, entrants=len(entries))
    if not entries:
        return result
    start_day = an.day_of(as_utc(start).date())
    s = summary_data(
        analytics.transactions(), start_day, observation_end=start_day, unit_days=an.UNIT_DAYS
    )
    try:
        model = an.fit_purchase_model(model_name, s)
    except NotEnoughData as exc:
        result.unavailable = str(exc)
        return result
    position = {int(c): i for i, c in enumerate(s.customer)}
    known = [(position[c], at) for c, at in entries if c in position]
    if not known:
        return result
    rows = np.array([i for i, _ in known], dtype=np.int64)
    x, t_x, T = s.frequency[rows], s.recency[rows], s.T[rows]
    unit = 86400.0 * an.UNIT_DAYS
    until_end = (as_utc(end) - as_utc(start)).total_seconds() / unit
    until_entry = np.array(
        [max((at - as_utc(start)).total_seconds(), 0.0) / unit for _, at in known]
    )
    window = np.maximum(until_end - until_entry, 0.0)
    expected = model.expected_purchases(until_end, x, t_x, T) - model.expected_purchases(
        until_entry, x, t_x, T
    )
    params = model.params
    alive = model.probability_alive(x, t_x, T)
    r, alpha = params["r"], params["alpha"]
    with np.errstate(all="ignore"):
        no_purchase = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + window)))
        # Where the hypergeometric series is not finite (a fit at the edge of the parameter
        # space), the posterior mean rate over the window, dropout ignored.
        steady = alive * (r + x) / (alpha + T) * window
    expected = np.where(np.isfinite(expected), expected, steady)
    result.expected_orders = float(np.nansum(np.maximum(expected, 0.0)))
    result.expected_buyers = float(np.nansum(alive * (1.0 - no_purchase)))
    return result


def true_lift(
    truth: Mapping[str, tuple[float, float]],
    treated: list[tuple[str, bool]],
) -> float | None:
    """``mean(p_if_contacted - p_no_contact)`` over the treatment entrants (customer id,
    contacted), counting 0 for those not contacted; None without truth for any of them."""
    lifts = []
    for customer_id, contacted in treated:
        p = truth.get(customer_id)
        if p is None:
            continue
        p_no, p_if = p
        lifts.append(p_if - p_no if contacted else 0.0)
    return float(np.mean(lifts)) if lifts else None


def estimated_lift(
    treatment: tuple[int, int], holdout: tuple[int, int], base: Baseline
) -> float | None:
    """The treatment's reactivation rate minus the holdout's (contacts, buyers), or minus
    the model's expected rate when there is no holdout."""
    n_t, b_t = treatment
    if n_t == 0:
        return None
    n_h, b_h = holdout
    if n_h:
        return b_t / n_t - b_h / n_h
    if base.unavailable or not base.entrants:
        return None
    return b_t / n_t - base.expected_buyers / base.entrants


def backtest(
    engine: Engine,
    analytics: Analytics,
    *,
    flow_id: int,
    model_name: str,
    start: datetime,
    end: datetime,
    data_end: datetime | None,
    treatment: tuple[int, int],
    holdout: tuple[int, int],
    truth: Mapping[str, tuple[float, float]],
) -> Backtest:
    """The backtest section of a simulation that ran from ``start`` to ``end``;
    ``treatment`` and ``holdout`` are (entrants, buyers)."""
    replay = is_replay(start, data_end)
    with engine.connect() as conn:
        entries = entrants(conn, flow_id, start)
    base = baseline(analytics, model_name, start, end, [(c, at) for c, _k, at, _h, _n in entries])
    out = Backtest(
        replay=replay,
        data_end=data_end,
        came_back=treatment[1] + holdout[1],
        baseline=base,
    )
    if replay:
        out.note = (
            "replay of recorded history: the buyers came back without the flow, which did "
            "not run then; compare them with the model's no-contact expectation"
        )
        return out
    out.estimated_lift = estimated_lift(treatment, holdout, base)
    if truth:
        out.true_lift = true_lift(truth, [(k, n) for _c, k, _at, h, n in entries if not h])
    return out
