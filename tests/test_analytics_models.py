"""The models against the published CDNOW figures (Fader, Hardie and Lee 2005), plus
properties that must hold for any parameters."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winback.analytics import BetaGeo, GammaGamma, ParetoNBD, summary_data
from winback.analytics.bgnbd import log_likelihood as bgnbd_ll
from winback.analytics.orders_file import day_number, read_orders
from winback.analytics.pareto_nbd import log_likelihood as pareto_ll
from winback.analytics.summary import Summary, Transactions
from winback.data import CDNOW_SAMPLE


def sig3(value: float, expected: float) -> bool:
    """Equal to 3 significant digits of the published figure."""
    return float(f"{value:.3g}") == float(f"{expected:.3g}")


@pytest.fixture(scope="module")
def cdnow() -> Summary:
    orders = read_orders(CDNOW_SAMPLE)
    return summary_data(orders.transactions, day_number(date(1997, 9, 30)), unit_days=7.0)


def test_cdnow_summary(cdnow: Summary) -> None:
    assert len(cdnow) == 2357
    assert int((cdnow.frequency > 0).sum()) == 946
    assert cdnow.T.max() == pytest.approx(38.857, abs=1e-3)


def test_bgnbd_cdnow(cdnow: Summary) -> None:
    m = BetaGeo.fitted(cdnow.frequency, cdnow.recency, cdnow.T)
    for name, value in {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}.items():
        assert sig3(m.params[name], value), (name, m.params[name])
    assert m.fit is not None and round(m.fit.log_likelihood, 1) == -9582.4
    assert m.fit is not None and m.fit.converged
    e = m.expected_purchases(39, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert sig3(float(e[0]), 1.226)


def test_pareto_nbd_cdnow(cdnow: Summary) -> None:
    m = ParetoNBD.fitted(cdnow.frequency, cdnow.recency, cdnow.T)
    for name, value in {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}.items():
        assert sig3(m.params[name], value), (name, m.params[name])
    assert m.fit is not None and m.fit.converged
    assert round(m.fit.log_likelihood, 1) == -9595.0


def test_gamma_gamma_cdnow(cdnow: Summary) -> None:
    m = GammaGamma.fitted(cdnow.frequency, cdnow.monetary_value)
    assert m.fit is not None and m.fit.n == 946 and m.fit.converged
    for name, value in {"p": 6.25, "q": 3.74, "gamma": 15.44}.items():
        assert sig3(m.params[name], value), (name, m.params[name])


def test_same_day_purchases_are_one_transaction() -> None:
    tx = Transactions(
        customer=np.array([7, 7, 7, 9]),
        day=np.array([10, 10, 17, 12]),
        amount=np.array([5.0, 5.0, 20.0, 3.0]),
    )
    s = summary_data(tx, 24, observation_end=40)
    assert list(s.customer) == [7, 9]
    assert list(s.frequency) == [1.0, 0.0]
    assert list(s.recency) == [7.0, 0.0]
    assert list(s.T) == [14.0, 12.0]
    assert list(s.monetary_value) == [20.0, 0.0]
    assert list(s.orders) == [3, 1]


BG = BetaGeo(0.243, 4.414, 0.793, 2.426)
PN = ParetoNBD(0.553, 10.578, 0.606, 11.669)
customer = st.tuples(st.integers(0, 60), st.floats(0.0, 1.0), st.floats(0.1, 200.0)).map(
    lambda c: (float(c[0]), 0.0 if c[0] == 0 else c[1] * c[2], c[2])
)
params4 = st.tuples(*(st.floats(0.05, 20.0) for _ in range(4)))


@settings(max_examples=150, deadline=None)
@given(c=customer, p=params4)
def test_bgnbd_bounds_and_monotonicity(
    c: tuple[float, float, float], p: tuple[float, float, float, float]
) -> None:
    x, t, T = (np.array([v]) for v in c)
    m = BetaGeo(*p)
    alive = float(m.probability_alive(x, t, T)[0])
    assert 0.0 <= alive <= 1.0
    e = m.expected_purchases(np.array([1.0, 10.0, 100.0]), x, t, T)
    assert np.all(np.isfinite(e)) and np.all(e >= -1e-9)
    assert e[0] <= e[1] + 1e-9 <= e[2] + 2e-9
    assert np.isfinite(bgnbd_ll(p, x, t, T)[0])


@settings(max_examples=150, deadline=None)
@given(c=customer, p=params4)
def test_pareto_bounds_and_monotonicity(
    c: tuple[float, float, float], p: tuple[float, float, float, float]
) -> None:
    x, t, T = (np.array([v]) for v in c)
    m = ParetoNBD(*p)
    alive = float(m.probability_alive(x, t, T)[0])
    assert 0.0 <= alive <= 1.0
    e = m.expected_purchases(np.array([1.0, 10.0, 100.0]), x, t, T)
    assert np.all(np.isfinite(e)) and np.all(e >= 0)
    assert e[0] <= e[1] <= e[2]
    assert np.isfinite(pareto_ll(p, x, t, T)[0])


@settings(max_examples=100, deadline=None)
@given(x=st.integers(1, 50), t=st.floats(0.0, 1.0), T=st.floats(1.0, 100.0), later=st.floats(1, 50))
def test_p_alive_falls_with_time_since_last_purchase(
    x: int, t: float, T: float, later: float
) -> None:
    xs, ts = np.array([float(x)]), np.array([t * T])
    for m in (BG, PN):
        now = m.probability_alive(xs, ts, np.array([T]))[0]
        after = m.probability_alive(xs, ts, np.array([T + later]))[0]
        assert after <= now + 1e-12


@settings(max_examples=100, deadline=None)
@given(x=st.integers(1, 50), m1=st.floats(1, 500), m2=st.floats(1, 500))
def test_expected_spend_between_population_and_own_mean(x: int, m1: float, m2: float) -> None:
    gg = GammaGamma(6.25, 3.74, 15.44)
    e1, e2 = gg.expected_spend(np.array([x, x]), np.array([m1, m2]))
    lo, hi = sorted((gg.population_mean, m1))
    assert lo - 1e-9 <= e1 <= hi + 1e-9
    assert (e1 <= e2) == (m1 <= m2) or abs(e1 - e2) < 1e-9


def test_clv_matches_the_direct_sum(cdnow: Summary) -> None:
    from winback.analytics.clv import STEP_DAYS, customer_lifetime_value, predict

    spend = np.full(len(cdnow), 30.0)
    for model in (BG, PN):
        got = customer_lifetime_value(
            model, spend, cdnow.frequency, cdnow.recency, cdnow.T,
            unit_days=7.0, horizon_days=365, annual_discount=0.1,
        )  # fmt: skip
        want = np.zeros(len(cdnow))
        prev = np.zeros(len(cdnow))
        for i in range(1, 14):
            end = min(i * STEP_DAYS, 365)
            e = model.expected_purchases(end / 7.0, cdnow.frequency, cdnow.recency, cdnow.T)
            want += (e - prev) / 1.1 ** (end / 365)
            prev = e
        np.testing.assert_allclose(got, want * 30.0, rtol=1e-10)
    p = predict(
        BG, GammaGamma(6.25, 3.74, 15.44), cdnow.frequency, cdnow.recency, cdnow.T,
        cdnow.monetary_value, cdnow.last_day.astype(float), cdnow.calibration_end, unit_days=7.0,
    )  # fmt: skip
    direct = BG.expected_purchases_if_alive(90 / 7, cdnow.frequency, cdnow.T) * p.p_alive
    np.testing.assert_allclose(p.expected_purchases_90d, direct, rtol=1e-12)
    deduped = BG.expected_purchases(90 / 7, cdnow.frequency, cdnow.recency, cdnow.T)
    np.testing.assert_allclose(deduped, direct, rtol=1e-12)
    assert np.all((p.p_alive >= 0) & (p.p_alive <= 1)) and np.all(p.clv >= 0)
    # Cadence: the next order is due one (shrunk) inter-purchase time after the last one.
    assert np.all(p.next_order_day >= cdnow.last_day)
    np.testing.assert_allclose(p.days_overdue, cdnow.calibration_end - p.next_order_day)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 60), st.floats(0, 100)),
        min_size=1,
        max_size=200,
    ),
    cal=st.integers(0, 60),
)
def test_dense_and_sorted_summaries_agree(rows: list[tuple[int, int, float]], cal: int) -> None:
    cust = np.array([r[0] for r in rows])
    day = np.array([r[1] for r in rows])
    amount = np.array([r[2] for r in rows])
    dense = summary_data(Transactions(cust, day, amount), cal)
    # Sparse customer codes take the general (sorting) path.
    sparse = summary_data(Transactions(cust * 10**9, day, amount), cal)
    assert np.array_equal(dense.customer * 10**9, sparse.customer)
    for name in (
        "frequency",
        "recency",
        "T",
        "first_day",
        "last_day",
        "orders",
        "holdout_frequency",
    ):
        assert np.array_equal(getattr(dense, name), getattr(sparse, name)), name
    for name in ("monetary_value", "revenue"):
        np.testing.assert_allclose(getattr(dense, name), getattr(sparse, name), atol=1e-9)
