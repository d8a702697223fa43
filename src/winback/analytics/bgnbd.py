"""The BG/NBD model (Fader, Hardie and Lee 2005, "Counting your customers the easy way").

While alive, a customer buys as a Poisson process of rate λ, heterogeneous across customers
as Gamma(r, α); after every purchase the customer "dies" with probability p, heterogeneous as
Beta(a, b). Fitted on frequency *x*, recency *t_x* and age *T* (see
:mod:`winback.analytics.summary`).

Everything is in log space; the likelihood has an analytic gradient, so BFGS converges to
the published CDNOW figures (r 0.243, α 4.414, a 0.793, b 2.426, LL −9582.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, expit, gammaln, hyp2f1

from winback.analytics._fit import (
    BETA_BOUNDS,
    Distinct,
    FitResult,
    FloatArray,
    NotEnoughData,
    as_float,
    distinct_pairs,
    dropout_mean,
    maximise_within,
)

NAMES = ("r", "alpha", "a", "b")


def log_likelihood(
    params: tuple[float, float, float, float], x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Per-customer log-likelihood (equation 6 of the paper, in log space)."""
    return _ll_and_grad(np.log(np.asarray(params, dtype=np.float64)), x, t_x, T, None)[0]


def _ll_and_grad(
    z: FloatArray, x: FloatArray, t: FloatArray, T: FloatArray, w: FloatArray | None
) -> tuple[FloatArray, FloatArray]:
    r, alpha, a, b = np.exp(z)
    rx = r + x
    log_aT = np.log(alpha + T)
    log_at = np.log(alpha + t)
    A1 = gammaln(rx) - gammaln(r) + r * np.log(alpha)
    A2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    A3 = -rx * log_aT
    has = x > 0
    bx1 = np.where(has, b + x - 1, 1.0)
    A4 = np.where(has, np.log(a) - np.log(bx1) - rx * log_at, -np.inf)
    m = np.maximum(A3, A4)
    e3 = np.exp(A3 - m)
    e4 = np.exp(A4 - m)
    ll = A1 + A2 + m + np.log(e3 + e4)
    w3 = e3 / (e3 + e4)
    w4 = 1.0 - w3
    d_r = digamma(rx) - digamma(r) + np.log(alpha) - w3 * log_aT - w4 * log_at
    d_alpha = r / alpha - w3 * rx / (alpha + T) - w4 * rx / (alpha + t)
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x) - w4 / bx1
    if w is None:
        return ll, np.zeros(4)
    grad = np.array(
        [
            r * np.dot(w, d_r),
            alpha * np.dot(w, d_alpha),
            a * np.dot(w, d_a),
            b * np.dot(w, d_b),
        ]
    )
    return ll, grad


class _Objective:
    """Mean negative log-likelihood and its gradient, fast: every term that depends on x
    alone is evaluated once per distinct x and weighted by its count; logs of α + T and
    α + t_x once per distinct T and t_x; only the two-term log-sum-exp runs per (distinct)
    customer."""

    def __init__(self, x: FloatArray, t: FloatArray, T: FloatArray, w: FloatArray, n: int):
        self.w, self.n = w, n
        X, tt, TT = Distinct(x), Distinct(t), Distinct(T)
        # Identical customers once, weighted: one sort of a combined integer key.
        key = (X.index * len(tt.values) + tt.index) * len(TT.values) + TT.index
        _, rows, counts = np.unique(key, return_index=True, return_counts=True)
        if len(w) == len(x) and np.all(w == 1):
            self.w = counts.astype(np.float64)
        else:  # already weighted rows: keep them as they are
            rows, self.w = np.arange(len(x)), w
        self.x = x[rows]
        self.X, self.t, self.T = X.subset(rows), tt.subset(rows), TT.subset(rows)
        self.Wx = np.bincount(self.X.index, weights=self.w, minlength=len(self.X.values))
        self.has_x = self.X.values > 0

    def __call__(self, z: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(z)
        xv, Wx = self.X.values, self.Wx
        bx1 = np.where(self.has_x, b + xv - 1, 1.0)
        # Terms in x only.
        A12 = (
            gammaln(r + xv) - gammaln(r) + r * np.log(alpha)
            + gammaln(a + b) + gammaln(b + xv) - gammaln(b) - gammaln(a + b + xv)
        )  # fmt: skip
        c4 = np.where(self.has_x, np.log(a) - np.log(bx1), -np.inf)
        # Per customer: log(e^A3 + e^A4).
        rx = r + self.x
        log_aT = np.log(alpha + self.T.values)
        log_at = np.log(alpha + self.t.values)
        A3 = -rx * self.T.gather(log_aT)
        A4 = self.X.gather(c4) - rx * self.t.gather(log_at)
        # log-sum-exp and the softmax weight with one exp and one log1p.
        d = A4 - A3
        e = np.exp(-np.abs(d))
        lse = np.maximum(A3, A4) + np.log1p(e)
        ll = float(np.dot(Wx, A12)) + float(np.dot(self.w, lse))
        w4 = self.w * np.where(d > 0, 1.0, e) / (1.0 + e)
        w3 = self.w - w4
        inv_aT = self.T.gather(1.0 / (alpha + self.T.values))
        inv_at = self.t.gather(1.0 / (alpha + self.t.values))
        lT, lt = self.T.gather(log_aT), self.t.gather(log_at)
        d_r = float(np.dot(Wx, digamma(r + xv) - digamma(r) + np.log(alpha)))
        d_r -= float(np.dot(w3, lT) + np.dot(w4, lt))
        d_alpha = float(np.sum(Wx)) * r / alpha - float(
            np.dot(w3 * rx, inv_aT) + np.dot(w4 * rx, inv_at)
        )
        W4x = np.bincount(self.X.index, weights=w4, minlength=len(xv))
        d_a = float(np.dot(Wx, digamma(a + b) - digamma(a + b + xv))) + float(W4x.sum()) / a
        d_b = float(
            np.dot(Wx, digamma(a + b) + digamma(b + xv) - digamma(b) - digamma(a + b + xv))
        ) - float(np.dot(W4x, np.where(self.has_x, 1.0 / bx1, 0.0)))
        grad = np.array([r * d_r, alpha * d_alpha, a * d_a, b * d_b])
        return -ll / self.n, -grad / self.n


@dataclass(frozen=True)
class BetaGeo:
    """A fitted BG/NBD model. Time is in the unit of the data it was fitted on."""

    r: float
    alpha: float
    a: float
    b: float
    fit: FitResult | None = None

    name = "bgnbd"

    @classmethod
    def fitted(
        cls,
        frequency: FloatArray,
        recency: FloatArray,
        T: FloatArray,
        *,
        initial: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    ) -> BetaGeo:
        """Maximum likelihood fit (analytic gradient, BFGS on log-parameters); a and b are
        bounded by :data:`~winback.analytics._fit.BETA_BOUNDS` (see :func:`maximise_within`)."""
        x, t, TT = as_float(frequency), as_float(recency), as_float(T)
        _check(x, t, TT)
        n = len(x)
        neg = _Objective(x, t, TT, np.ones(n), n)
        res = maximise_within("bgnbd", NAMES, neg, initial, n, {"a": BETA_BOUNDS, "b": BETA_BOUNDS})
        p = res.params
        return cls(p["r"], p["alpha"], p["a"], p["b"], res)

    @property
    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}

    def _log_odds_dead(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        has = x > 0
        bx1 = np.where(has, self.b + x - 1, 1.0)
        term = (
            np.log(self.a)
            - np.log(bx1)
            + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x))
        )
        return np.where(has, term, -np.inf)

    def probability_alive(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """P(alive | x, t_x, T) (equation 11): one-time buyers are alive by construction."""
        x, t_x, T = as_float(x), as_float(t_x), as_float(T)
        result: FloatArray = expit(-self._log_odds_dead(x, t_x, T))
        return result

    def expected_purchases(
        self, t: float | FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` (equation 10).

        The hypergeometric term is taken through Euler's transformation,
        (1−z)^{r+x} ₂F₁(r+x, b+x; a+b+x−1; z) = (1−z)^{a−1} ₂F₁(a+b−1−r, a−1; a+b+x−1; z),
        which keeps the series short and bounded for heavy buyers.
        """
        x, t_x, T = as_float(x), as_float(t_x), as_float(T)
        alive = self.probability_alive(x, t_x, T)
        if np.ndim(t) == 0 and len(x) > 1000:  # the ₂F₁ once per distinct (x, T)
            ux, uT, inverse = distinct_pairs(x, T)
            result: FloatArray = self.expected_purchases_if_alive(t, ux, uT)[inverse] * alive
            return result
        result = self.expected_purchases_if_alive(t, x, T) * alive
        return result

    def expected_purchases_if_alive(
        self, t: float | FloatArray, x: FloatArray, T: FloatArray
    ) -> FloatArray:
        """The factor of E[Y(t) | x, t_x, T] that multiplies P(alive); it depends on x and
        T only."""
        x, T, t = as_float(x), as_float(T), as_float(t)
        z = t / (self.alpha + T + t)
        if abs(self.a - 1.0) < 1e-6:  # removable singularity at a = 1: average both sides
            closed = 0.5 * (self._head(z, x, 1.0 - 1e-6) + self._head(z, x, 1.0 + 1e-6))
        else:
            closed = self._head(z, x, self.a)
        return dropout_mean(self.r + x, z / (1.0 - z), self.a, self.b + x, closed)

    def _head(self, z: FloatArray, x: FloatArray, a: float) -> FloatArray:
        r, b = self.r, self.b
        with np.errstate(all="ignore"):
            hyp = np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
            result: FloatArray = (a + b + x - 1) / (a - 1) * (1.0 - hyp)
            return result

    def expected_purchases_new(self, t: float | FloatArray) -> FloatArray:
        """E[X(t)]: expected purchases in (0, t] of a customer who has just arrived."""
        t = as_float(t)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + t)
        with np.errstate(all="ignore"):
            hyp = np.exp(r * np.log1p(-z)) * hyp2f1(r, b, a + b - 1, z)
            closed = (a + b - 1) / (a - 1) * (1.0 - hyp)
        return dropout_mean(r, t / alpha, a, b, closed)

    def posterior_rate(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """E[λ | alive, x, T] = (r + x) / (α + T): the customer's own purchase rate, shrunk
        towards the population's."""
        return (self.r + as_float(x)) / (self.alpha + as_float(T))


def _check(x: FloatArray, t: FloatArray, T: FloatArray) -> None:
    if len(x) < 3:
        raise NotEnoughData(f"a BG/NBD fit needs at least 3 customers, got {len(x)}")
    bad = np.flatnonzero((x < 0) | (t < 0) | (t > T + 1e-9) | ((x == 0) & (t != 0)))
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{len(bad)} customers have inconsistent summary data, first at row {i}: "
            f"frequency={x[i]}, recency={t[i]}, T={T[i]} (expected 0 <= recency <= T and "
            "recency 0 when frequency is 0)"
        )
