"""The MBG/NBD model (Batislam, Denizel and Filiztekin 2007, "Empirical validation and
comparison of models for customer base analysis", *International Journal of Research in
Marketing* 24(3); as ``ModifiedBetaGeoFitter`` in lifetimes and ``mbgnbd`` in BTYDplus).

BG/NBD lets a customer drop out only after a repeat purchase, so a one-order customer is alive
with probability 1 however long ago they bought. MBG/NBD also allows the drop-out at the first
purchase: while alive a customer buys as Poisson(λ), λ ~ Gamma(r, α); at the first purchase and
after every one they drop out with probability p ~ Beta(a, b). The likelihood is

    L = B(a, b+x+1)/B(a, b) · Γ(r+x) α^r / Γ(r) · [ (α+T)^-(r+x) + a/(b+x) (α+t_x)^-(r+x) ]

and P(alive | x, t_x, T) = 1 / (1 + a/(b+x) · ((α+T)/(α+t_x))^(r+x)), which falls with T for
x = 0 too. Fitted like BG/NBD: log-parameters, log-sum-exp, analytic gradient, BFGS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, expit, gammaln, hyp2f1

from winback.analytics._fit import (
    BETA_BOUNDS,
    FitResult,
    FloatArray,
    NotEnoughData,
    as_float,
    compress,
    distinct_pairs,
    dropout_mean,
    maximise_within,
)

NAMES = ("r", "alpha", "a", "b")


def _ll_terms(
    z: FloatArray, x: FloatArray, t: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-row log-likelihood and the two log-sum-exp weights (alive at T, dropped out)."""
    r, alpha, a, b = np.exp(z)
    rx = r + x
    head = (
        gammaln(rx) - gammaln(r) + r * np.log(alpha)
        + gammaln(a + b) + gammaln(b + x + 1) - gammaln(b) - gammaln(a + b + x + 1)
    )  # fmt: skip
    A3 = -rx * np.log(alpha + T)
    A4 = np.log(a) - np.log(b + x) - rx * np.log(alpha + t)
    d = A4 - A3
    e = np.exp(-np.abs(d))
    lse = np.maximum(A3, A4) + np.log1p(e)
    w4 = np.where(d > 0, 1.0, e) / (1.0 + e)
    return head + lse, 1.0 - w4, w4


def log_likelihood(
    params: tuple[float, float, float, float], x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Per-customer log-likelihood."""
    z = np.log(np.asarray(params, dtype=np.float64))
    return _ll_terms(z, as_float(x), as_float(t_x), as_float(T))[0]


class _Objective:
    """Mean negative log-likelihood and its analytic gradient in log-parameters, over the
    distinct (x, t_x, T) rows weighted by their counts."""

    def __init__(self, x: FloatArray, t: FloatArray, T: FloatArray) -> None:
        (self.x, self.t, self.T), self.w = compress(x, t, T)
        self.n = len(x)

    def __call__(self, z: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(z)
        x, t, T, w = self.x, self.t, self.T, self.w
        ll, w3, w4 = _ll_terms(z, x, t, T)
        rx = r + x
        d_r = digamma(rx) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + T)
        d_r -= w4 * np.log(alpha + t)
        d_alpha = r / alpha - w3 * rx / (alpha + T) - w4 * rx / (alpha + t)
        d_a = digamma(a + b) - digamma(a + b + x + 1) + w4 / a
        d_b = digamma(a + b) + digamma(b + x + 1) - digamma(b) - digamma(a + b + x + 1)
        d_b -= w4 / (b + x)
        grad = np.array(
            [r * w @ d_r, alpha * w @ d_alpha, a * w @ d_a, b * w @ d_b], dtype=np.float64
        )
        return -float(w @ ll) / self.n, -grad / self.n


@dataclass(frozen=True)
class ModifiedBetaGeo:
    """A fitted MBG/NBD model. Time is in the unit of the data it was fitted on."""

    r: float
    alpha: float
    a: float
    b: float
    fit: FitResult | None = None

    name = "mbgnbd"

    @classmethod
    def fitted(
        cls,
        frequency: FloatArray,
        recency: FloatArray,
        T: FloatArray,
        *,
        initial: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    ) -> ModifiedBetaGeo:
        """Maximum likelihood fit (analytic gradient, BFGS on log-parameters). When the data
        show the same dropout probability for every customer (or none), a and b run to
        infinity: they are bounded by :data:`~winback.analytics._fit.BETA_BOUNDS` and the fit
        reports them in ``fit.extra["at_bound"]``."""
        x, t, TT = as_float(frequency), as_float(recency), as_float(T)
        if len(x) < 3:
            raise NotEnoughData(f"an MBG/NBD fit needs at least 3 customers, got {len(x)}")
        res = maximise_within(
            "mbgnbd",
            NAMES,
            _Objective(x, t, TT),
            initial,
            len(x),
            {"a": BETA_BOUNDS, "b": BETA_BOUNDS},
        )
        p = res.params
        return cls(p["r"], p["alpha"], p["a"], p["b"], res)

    @property
    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}

    def probability_alive(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """P(alive | x, t_x, T) = 1 / (1 + a/(b+x) · ((α+T)/(α+t_x))^(r+x))."""
        x, t_x, T = as_float(x), as_float(t_x), as_float(T)
        log_odds_dead = (
            np.log(self.a)
            - np.log(self.b + x)
            + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x))
        )
        alive: FloatArray = expit(-log_odds_dead)
        return alive

    def expected_purchases(
        self, t: float | FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T] = (a+b+x)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x)
        ₂F₁(r+x, b+x+1; a+b+x; t/(α+T+t))] · P(alive)."""
        x, t_x, T = as_float(x), as_float(t_x), as_float(T)
        alive = self.probability_alive(x, t_x, T)
        if np.ndim(t) == 0 and len(x) > 1000:  # the ₂F₁ once per distinct (x, T)
            ux, uT, inverse = distinct_pairs(x, T)
            per_pair: FloatArray = self.expected_purchases_if_alive(t, ux, uT)[inverse] * alive
            return per_pair
        own: FloatArray = self.expected_purchases_if_alive(t, x, T) * alive
        return own

    def expected_purchases_if_alive(
        self, t: float | FloatArray, x: FloatArray, T: FloatArray
    ) -> FloatArray:
        """The factor of E[Y(t) | x, t_x, T] that multiplies P(alive). Euler's transformation
        (1−z)^(r+x) ₂F₁(r+x, b+x+1; a+b+x; z) = (1−z)^(a−1) ₂F₁(a+b−r, a−1; a+b+x; z) keeps
        the series short for heavy buyers."""
        x, T, t = as_float(x), as_float(T), as_float(t)
        z = t / (self.alpha + T + t)
        return self._mean(z, x, self.a)

    def _mean(self, z: FloatArray, x: FloatArray, a: float) -> FloatArray:
        return dropout_mean(
            self.r + x, z / (1.0 - z), a, self.b + x + 1.0, self._closed_mean(z, x, a)
        )

    def _closed_mean(self, z: FloatArray, x: FloatArray, a: float) -> FloatArray:
        if abs(a - 1.0) < 1e-6:  # removable singularity at a = 1: average both sides
            both: FloatArray = 0.5 * (
                self._closed_mean(z, x, 1.0 - 1e-6) + self._closed_mean(z, x, 1.0 + 1e-6)
            )
            return both
        c = a + self.b + x
        with np.errstate(all="ignore"):
            hyp = np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + self.b - self.r, a - 1, c, z)
            mean: FloatArray = c / (a - 1) * (1.0 - hyp)
            return mean

    def expected_purchases_new(self, t: float | FloatArray) -> FloatArray:
        """E[X(t)] of a customer who has just made a first purchase:
        b/(a−1) · [1 − (α/(α+t))^r ₂F₁(r, b+1; a+b; t/(α+t))]."""
        t = as_float(t)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + t)
        with np.errstate(all="ignore"):
            hyp = np.exp(r * np.log1p(-z)) * hyp2f1(r, b + 1, a + b, z)
            closed = (a + b) / (a - 1) * (1.0 - hyp)
        # A new customer survives the first purchase with probability b / (a + b), then
        # buys like a customer alive with p ~ Beta(a, b + 1).
        new: FloatArray = b / (a + b) * dropout_mean(r, t / alpha, a, b + 1.0, closed)
        return new

    def posterior_rate(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """E[λ | alive, x, T] = (r + x) / (α + T)."""
        return (self.r + as_float(x)) / (self.alpha + as_float(T))
