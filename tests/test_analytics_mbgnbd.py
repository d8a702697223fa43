"""MBG/NBD against the BTYDplus / lifetimes figures on CDNOW, Pareto/NBD convergence on
generated shops, and analyses of a workspace as of a past date."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from scipy.special import hyp2f1

from winback.analytics import ModifiedBetaGeo, ParetoNBD, summary_data
from winback.analytics.mbgnbd import _Objective
from winback.analytics.orders_file import day_number, read_orders
from winback.analytics.summary import Summary, Transactions
from winback.clock import FixedClock
from winback.data import CDNOW_SAMPLE
from winback.generator import generate_orders_arrays
from winback.workspace import Workspace


@pytest.fixture(scope="module")
def cdnow() -> Summary:
    orders = read_orders(CDNOW_SAMPLE)
    return summary_data(orders.transactions, day_number(date(1997, 9, 30)), unit_days=7.0)


@pytest.fixture(scope="module")
def mbg(cdnow: Summary) -> ModifiedBetaGeo:
    return ModifiedBetaGeo.fitted(cdnow.frequency, cdnow.recency, cdnow.T)


def test_mbgnbd_cdnow_matches_btydplus(mbg: ModifiedBetaGeo) -> None:
    # BTYDplus mbgnbd.EstimateParameters on CDNOW, as checked by lifetimes' test suite.
    expected = {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}
    for name, value in expected.items():
        assert mbg.params[name] == pytest.approx(value, abs=1.5e-3), name
    assert mbg.fit is not None and mbg.fit.converged
    assert round(mbg.fit.log_likelihood, 1) == -9582.1


def test_mbgnbd_expectations(mbg: ModifiedBetaGeo) -> None:
    times = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0])
    hardie = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])  # BG/NBD, Hardie's sheet
    assert mbg.expected_purchases_new(times) == pytest.approx(hardie, rel=0.05)
    x, t_x, T = np.array([2.0]), np.array([30.43]), np.array([38.86])
    got = float(mbg.expected_purchases(39, x, t_x, T)[0])
    assert got == pytest.approx(1.226, abs=0.05)
    # The Euler-transformed series against the published form.
    r, alpha, a, b = mbg.r, mbg.alpha, mbg.a, mbg.b
    z = 39 / (alpha + 38.86 + 39)
    published = (
        (a + b + 2) / (a - 1) * (1 - hyp2f1(r + 2, b + 3, a + b + 2, z) * (1 - z) ** (r + 2))
    )
    alive = float(mbg.probability_alive(x, t_x, T)[0])
    assert got == pytest.approx(published * alive, rel=1e-10)


def test_one_order_customers_can_be_dormant(mbg: ModifiedBetaGeo) -> None:
    zeros = np.zeros(4)
    p = mbg.probability_alive(zeros, zeros, np.array([1.0, 10.0, 40.0, 100.0]))
    assert np.all(np.diff(p) < 0) and p[0] < 1.0 and p[-1] < 0.5


def test_mbgnbd_gradient_is_the_likelihood_s(cdnow: Summary) -> None:
    objective = _Objective(cdnow.frequency, cdnow.recency, cdnow.T)
    z = np.log([0.4, 5.0, 0.9, 2.0])
    _, grad = objective(z)
    h = 1e-6
    numeric = [(objective(z + h * e)[0] - objective(z - h * e)[0]) / (2 * h) for e in np.eye(4)]
    assert grad == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def _generated(lag_days: int) -> Summary:
    arrays = generate_orders_arrays(1500, 24, 1)
    day = arrays.ordered_at.astype("datetime64[D]").astype(np.int64)
    tx = Transactions(arrays.customer.astype(np.int64), day, arrays.amount)
    return summary_data(tx, int(day.max()) + lag_days, unit_days=7.0)


def test_pareto_nbd_converges_on_generated_shops() -> None:
    """Analysed months after its last order, a generated shop has nearly homogeneous
    lifetimes: the likelihood rises towards s, β → ∞. The bounded fit stops at the bound of s
    with finite parameters and a vanishing projected gradient."""
    s = _generated(120)
    m = ParetoNBD.fitted(s.frequency, s.recency, s.T)
    assert m.fit is not None and m.fit.converged, m.fit
    assert m.fit.gradient_norm < 1e-4 and m.fit.extra["at_bound"] == ["s"]
    assert all(0 < v < 1e6 for v in m.params.values())
    p = m.probability_alive(s.frequency, s.recency, s.T)
    assert np.all((p >= 0) & (p <= 1))


@pytest.mark.slow
def test_workspace_as_of_and_calibration_end(sqlite_workspace: Workspace) -> None:
    from tests.test_analytics_store import load_cdnow

    ws = sqlite_workspace
    load_cdnow(ws)
    ws.clock = FixedClock(datetime(2026, 3, 1, 9, tzinfo=UTC))
    ws.__dict__.pop("analytics", None)
    result = ws.analytics.analyze(write=False, holdout=False, as_of=date(1998, 6, 30))
    assert result.report["reference_date"] == date(1998, 6, 30)
    dormant = result.report["health"]["dormant"]
    assert dormant["fixed_rule"]["share"] < 0.95  # as of today (2026) it would be 100 %
    assert 0 < dormant["alive_rule"]["share"] < 1
    early = ws.analytics.analyze(write=False, holdout=False, as_of=date(1997, 3, 31))
    assert early.report["orders"] < result.report["orders"]  # later orders are ignored
    fit = ws.analytics.fit("mbgnbd", calibration_end=date(1997, 9, 30), as_of=date(1998, 6, 30))
    assert round(fit["params"]["r"], 3) == 0.525
    hold = fit["holdout"]
    assert hold["holdout_end"] == date(1998, 6, 30) and hold["holdout_weeks"] == 39.0
    assert hold["predicted_total"] == pytest.approx(hold["actual_total"], rel=0.2)


@pytest.mark.slow
def test_cli_as_of_on_a_workspace(sqlite_workspace: Workspace) -> None:
    from tests.test_analytics_cli import run_json
    from tests.test_analytics_store import load_cdnow

    load_cdnow(sqlite_workspace)
    path = str(sqlite_workspace.path)
    sqlite_workspace.close()
    out = run_json("analyze", "-w", path, "--as-of", "1998-06-30", "--json", "--no-holdout")
    assert str(out["reference_date"]) == "1998-06-30" and out["model"]["model"] == "mbgnbd"
    assert out["health"]["dormant"]["fixed_rule"]["share"] < 0.95
    fit = run_json(
        "models", "fit", "--model", "pareto-nbd", "-w", path,
        "--calibration-end", "1997-09-30", "--as-of", "1998-06-30", "--json",
    )  # fmt: skip
    assert str(fit["holdout"]["holdout_end"]) == "1998-06-30" and fit["converged"]
    assert round(fit["params"]["r"], 3) == 0.553


def test_engagement_after_the_reference_day_is_unknown() -> None:
    from winback.analytics.analysis import Engagement, _engagement_as_of

    eng = Engagement(np.array([5.0, 12.0]), np.array([np.nan, 9.0]), np.array([11.0, 10.0]))
    got = _engagement_as_of(eng, 10)
    assert np.array_equal(got.last_open, [5.0, np.nan], equal_nan=True)
    assert np.array_equal(got.last_click, [np.nan, 9.0], equal_nan=True)
    assert np.array_equal(got.last_visit, [np.nan, 10.0], equal_nan=True)
