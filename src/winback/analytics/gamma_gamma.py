"""The Gamma-Gamma model of spend per transaction (Fader, Hardie and Lee 2005, "RFM and CLV:
using iso-value curves"; Fader and Hardie, "The Gamma-Gamma model of monetary value").

A customer's transaction values are Gamma(p, ν) around their mean; ν varies across customers
as Gamma(q, γ). It is fitted on customers with at least one repeat transaction, from their
number of repeat transactions *x* and the mean value of those, *m_x*. The published CDNOW
figures are p 6.25, q 3.74, γ 15.44.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln

from winback.analytics._fit import (
    Distinct,
    FitResult,
    FloatArray,
    NotEnoughData,
    as_float,
    maximise,
)

NAMES = ("p", "q", "gamma")


def _ll_and_grad(
    z: FloatArray, x: FloatArray, m: FloatArray, w: FloatArray | None
) -> tuple[FloatArray, FloatArray]:
    p, q, g = np.exp(z)
    px = p * x
    log_den = np.log(g + m * x)
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(g)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * log_den
    )
    if w is None:
        return ll, np.zeros(3)
    d_p = x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - log_den)
    d_q = digamma(px + q) - digamma(q) + np.log(g) - log_den
    d_g = q / g - (px + q) / (g + m * x)
    grad = np.array([p * np.dot(w, d_p), q * np.dot(w, d_q), g * np.dot(w, d_g)])
    return ll, grad


def log_likelihood(
    params: tuple[float, float, float], frequency: FloatArray, monetary_value: FloatArray
) -> FloatArray:
    """Per-customer log-likelihood of the mean spend ``monetary_value`` over ``frequency``
    repeat transactions (frequency > 0)."""
    z = np.log(np.asarray(params, dtype=np.float64))
    return _ll_and_grad(z, as_float(frequency), as_float(monetary_value), None)[0]


class _Objective:
    """Mean negative log-likelihood and gradient from sufficient statistics: the Gamma
    function terms depend on x alone (evaluated per distinct x), (px−1) log m_x + px log x
    is linear in p (sums precomputed), so only log(γ + m_x x) runs per customer."""

    def __init__(self, x: FloatArray, m: FloatArray) -> None:
        self.X = Distinct(x)
        self.Wx = np.bincount(self.X.index, minlength=len(self.X.values)).astype(np.float64)
        self.mx = m * x
        self.x = x
        self.n = len(x)
        log_m = np.log(m)
        self.s_xlogm_xlogx = float(np.dot(x, log_m) + np.dot(x, np.log(x)))
        self.s_logm = float(log_m.sum())

    def __call__(self, z: FloatArray) -> tuple[float, FloatArray]:
        p, q, g = np.exp(z)
        xv, Wx = self.X.values, self.Wx
        log_den = np.log(g + self.mx)
        inv_den = 1.0 / (g + self.mx)
        s_log_den = float(log_den.sum())
        s_x_log_den = float(np.dot(self.x, log_den))
        gam = gammaln(p * xv + q) - gammaln(p * xv) - gammaln(q)
        ll = (
            float(np.dot(Wx, gam)) + self.n * q * np.log(g)
            + p * self.s_xlogm_xlogx - self.s_logm
            - p * s_x_log_den - q * s_log_den
        )  # fmt: skip
        d_p = float(np.dot(Wx, xv * (digamma(p * xv + q) - digamma(p * xv))))
        d_p += self.s_xlogm_xlogx - s_x_log_den
        d_q = float(np.dot(Wx, digamma(p * xv + q) - digamma(q))) + self.n * np.log(g) - s_log_den
        d_g = self.n * q / g - p * float(np.dot(self.x, inv_den)) - q * float(inv_den.sum())
        grad = np.array([p * d_p, q * d_q, g * d_g])
        return -ll / self.n, -grad / self.n


@dataclass(frozen=True)
class GammaGamma:
    """A fitted Gamma-Gamma spend model."""

    p: float
    q: float
    gamma: float
    fit: FitResult | None = None

    name = "gamma-gamma"

    @classmethod
    def fitted(
        cls,
        frequency: FloatArray,
        monetary_value: FloatArray,
        *,
        initial: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> GammaGamma:
        """Maximum likelihood fit on the customers with frequency > 0 and positive spend."""
        x, m = as_float(frequency), as_float(monetary_value)
        keep = (x > 0) & (m > 0)
        x, m = x[keep], m[keep]
        if len(x) < 3:
            raise NotEnoughData(
                f"a Gamma-Gamma fit needs at least 3 customers with a repeat purchase and a "
                f"positive spend, got {len(x)}"
            )
        neg = _Objective(x, m)
        n = len(x)
        res = maximise("gamma-gamma", NAMES, neg, initial, n, has_gradient=True)
        p = res.params
        return cls(p["p"], p["q"], p["gamma"], res)

    @property
    def params(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "gamma": self.gamma}

    def expected_spend(self, frequency: FloatArray, monetary_value: FloatArray) -> FloatArray:
        """E[M | x, m_x] = (q−1)/(px+q−1) · pγ/(q−1) + px/(px+q−1) · m_x: a weighted mean of
        the population mean and the customer's own mean (the population mean when x = 0)."""
        x, m = as_float(frequency), as_float(monetary_value)
        m = np.where(x > 0, m, 0.0)
        result: FloatArray = (self.gamma + m * x) * self.p / (self.p * x + self.q - 1.0)
        return result

    @property
    def population_mean(self) -> float:
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1 else float("inf")
