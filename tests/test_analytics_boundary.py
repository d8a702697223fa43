"""The BG/NBD family at its boundary: data without dropout (a pure NBD) drive the Beta
dropout parameters to infinity. The fit stops at the cap and says so; expectations, P(alive)
and CLV stay finite and equal the NBD's; the analysis warns and stores its figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select
from sqlalchemy.sql import and_

from winback.analytics._fit import BETA_BOUNDS, dropout_mean
from winback.analytics.analysis import EPOCH, analyze, boundary_note
from winback.analytics.bgnbd import BetaGeo
from winback.analytics.clv import customer_lifetime_value
from winback.analytics.mbgnbd import ModifiedBetaGeo
from winback.analytics.summary import Summary, Transactions, summary_data
from winback.clock import FixedClock
from winback.config import Settings
from winback.store.schema import contacts, orders
from winback.workspace import Workspace

R, ALPHA = 0.9, 6.0  # weekly purchase rate λ ~ Gamma(0.9, 6): one order per 6.7 weeks
REFERENCE = date(2026, 6, 30)
Fitted = tuple[Any, Summary]


def _no_dropout(n: int = 2000, seed: int = 7) -> Transactions:
    """Customers who never drop out: a first order in the last two years, then orders as a
    Poisson process of their own rate λ ~ Gamma(r, α) up to the reference day."""
    rng = np.random.default_rng(seed)
    end = (REFERENCE - EPOCH).days
    customer, day = [], []
    for c in range(n):
        first = end - int(rng.integers(30, 730))
        rate = rng.gamma(R, 1.0 / ALPHA) / 7.0  # per day
        k = rng.poisson(rate * (end - first))
        days = [first, *np.sort(rng.integers(first + 1, end + 1, size=k)).tolist()]
        customer += [c] * len(days)
        day += days
    amount = rng.gamma(4.0, 15.0, size=len(day)).round(2)
    return Transactions(np.asarray(customer), np.asarray(day), amount)


@pytest.fixture(scope="module")
def tx() -> Transactions:
    return _no_dropout()


@pytest.fixture(scope="module", params=[ModifiedBetaGeo, BetaGeo], ids=["mbgnbd", "bgnbd"])
def fitted(request: pytest.FixtureRequest, tx: Transactions) -> Fitted:
    s = summary_data(tx, (REFERENCE - EPOCH).days, unit_days=7.0)
    return request.param.fitted(s.frequency, s.recency, s.T), s


def test_fit_runs_to_the_cap_and_reports_it(fitted: Fitted) -> None:
    m, _ = fitted
    assert m.fit.converged, m.fit
    assert m.fit.extra["at_bound"]  # a at its floor or a, b at their cap
    assert all(BETA_BOUNDS[0] <= v <= BETA_BOUNDS[1] for v in (m.a, m.b))
    assert m.a / (m.a + m.b) < 1e-3  # no dropout: p → 0
    assert m.r == pytest.approx(R, rel=0.15) and m.alpha == pytest.approx(ALPHA, rel=0.2)


def test_expectations_are_the_nbd_s(fitted: Fitted) -> None:
    m, s = fitted
    x, t_x, T = s.frequency, s.recency, s.T
    alive = m.probability_alive(x, t_x, T)
    assert np.all(np.isfinite(alive)) and alive.min() > 0.99
    for weeks in (1.0, 13.0, 52.0):
        got = m.expected_purchases(weeks, x, t_x, T)
        nbd = (m.r + x) * weeks / (m.alpha + T)  # E[Y(t)] of the NBD: rate (r+x)/(α+T)
        assert np.all(np.isfinite(got))
        assert got == pytest.approx(nbd, rel=0.02)
    new = m.expected_purchases_new(np.array([4.0, 52.0]))
    assert new == pytest.approx(m.r * np.array([4.0, 52.0]) / m.alpha, rel=0.02)
    clv = customer_lifetime_value(
        m, np.full(len(x), 50.0), x, t_x, T, unit_days=7.0, horizon_days=365, annual_discount=0.1
    )
    assert np.all(np.isfinite(clv)) and np.all(clv > 0)


def test_closed_form_is_kept_where_it_is_exact() -> None:
    """Moderate parameters keep the ₂F₁ value bit for bit (the CDNOW figures do not move);
    a value out of the quantity's bounds is replaced by the quadrature, which agrees with the
    closed form to 1e-5 where both hold."""
    k, u, a, beta = np.array([1.2, 4.0]), np.array([0.5, 3.0]), 0.8, np.array([2.5, 6.0])
    exact = dropout_mean(k, u, a, beta, np.array([0.5, 7.0]))
    assert exact.tolist() == [0.5, 7.0]
    nbd = dropout_mean(k, u, a, beta + 1e6, np.array([np.nan, np.nan]))
    assert nbd == pytest.approx(k * u, rel=1e-5)  # p → 0: the NBD's k u
    quad = dropout_mean(k, u, a, beta, np.array([np.nan, -1.0]))
    assert np.all(np.isfinite(quad)) and np.all(quad < nbd)
    mbg = ModifiedBetaGeo(0.5, 6.0, 0.8, 2.5)
    z = np.array([0.1, 0.4, 0.8])
    x = np.array([0.0, 3.0, 20.0])
    closed = mbg._closed_mean(z, x, mbg.a)
    via_quadrature = dropout_mean(mbg.r + x, z / (1 - z), mbg.a, mbg.b + x + 1, np.nan * z)
    assert via_quadrature == pytest.approx(closed, rel=1e-5)


wide = st.floats(min_value=1e-3, max_value=1e9)


@settings(max_examples=30, deadline=None)
@given(r=wide, alpha=wide, a=wide, b=wide, x=st.integers(0, 500), T=st.floats(0, 1e4))
def test_formulas_are_finite_over_wide_ranges(
    r: float, alpha: float, a: float, b: float, x: int, T: float
) -> None:
    xs, ts, Ts = np.array([float(x)]), np.array([T / 2 if x else 0.0]), np.array([T])
    for model in (ModifiedBetaGeo(r, alpha, a, b), BetaGeo(r, alpha, a, b)):
        alive = model.probability_alive(xs, ts, Ts)
        assert np.all(np.isfinite(alive)) and np.all((alive >= 0) & (alive <= 1))
        for t in (1.0, 13.0, 52.0):
            e = model.expected_purchases(t, xs, ts, Ts)
            bound = (r + x) * t / (alpha + T)  # the NBD's: dropout only lowers it
            assert np.all(np.isfinite(e)) and np.all(e >= 0)
            assert np.all(e <= bound * (1 + 1e-6) + 1e-12)
        new = model.expected_purchases_new(np.array([1.0, 52.0]))
        assert np.all(np.isfinite(new)) and np.all(new >= 0)
        clv = customer_lifetime_value(
            model, np.array([40.0]), xs, ts, Ts, unit_days=7.0, horizon_days=365,
            annual_discount=0.1,
        )  # fmt: skip
        assert np.all(np.isfinite(clv))


def test_analysis_warns_and_keeps_its_figures(tx: Transactions) -> None:
    result = analyze(tx, (REFERENCE - EPOCH).days, Settings(cluster_max_k=2), holdout=False)
    p = result.predictions
    assert p is not None
    assert np.all(np.isfinite(p.expected_purchases_90d)) and np.all(np.isfinite(p.clv))
    assert np.isfinite(result.report["predictions"]["clv_total"])
    assert any("no dropout" in note and "90-day rule" in note for note in result.notes)


def test_workspace_stores_expected_purchases_and_clv(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    tx = _no_dropout(400, seed=3)
    at = datetime(2024, 1, 1, tzinfo=UTC)
    with ws.engine.begin() as conn:
        ids = ws.store.ensure_contacts([f"c{c}@example.org" for c in range(400)], at=at, conn=conn)
        rows = [
            {
                "order_id": f"o{i}",
                "contact_id": ids[f"c{c}@example.org"],
                "ordered_at": datetime.combine(
                    EPOCH + timedelta(days=int(d)), datetime.min.time(), UTC
                )
                + timedelta(hours=12),
                "amount": float(a),
                "currency": "EUR",
            }
            for i, (c, d, a) in enumerate(zip(tx.customer, tx.day, tx.amount, strict=True))
        ]
        conn.execute(insert(orders), rows)
    ws = ws.replace(clock=FixedClock(datetime(2026, 6, 30, 18, tzinfo=UTC)))
    result = ws.analytics.analyze(holdout=False)
    assert any("no dropout" in note for note in result.notes)
    with ws.engine.connect() as conn:
        stored = conn.execute(
            select(func.count()).where(
                and_(contacts.c.expected_purchases_90d.is_not(None), contacts.c.clv.is_not(None))
            )
        ).scalar_one()
    assert stored == 400


def test_boundary_note_tells_no_dropout_from_one_dropout_for_all() -> None:
    same = {"params": {"r": 0.6, "alpha": 11.0, "a": 1.4e5, "b": 1e6}, "at_bound": ["b"]}
    note = boundary_note("mbgnbd", same, 60)
    assert note is not None and "same dropout probability (0.123" in note and "60-day" in note
    none = {"params": {"r": 0.9, "alpha": 6.0, "a": 1e-6, "b": 9e3}, "at_bound": ["a"]}
    assert "no dropout" in str(boundary_note("bgnbd", none, 90))
    interior = {"params": {"r": 0.2, "alpha": 4.0, "a": 0.8, "b": 2.4}, "at_bound": []}
    assert boundary_note("bgnbd", interior, 90) is None
    lifetimes = {"params": {"r": 1.0, "alpha": 5.0, "s": 54.6, "beta": 900.0}, "at_bound": ["s"]}
    assert boundary_note("pareto-nbd", lifetimes, 90) is None
