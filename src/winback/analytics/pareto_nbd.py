"""The Pareto/NBD model (Schmittlein, Morrison and Colombo 1987; likelihood as in Fader and
Hardie 2005, "A note on deriving the Pareto/NBD model and related expressions").

While alive a customer buys as Poisson(λ), λ ~ Gamma(r, α); the lifetime is exponential with
rate μ, μ ~ Gamma(s, β). The likelihood is

    L = Γ(r+x) α^r β^s / Γ(r) · [ (α+T)^-(r+x) (β+T)^-s + s (H(t_x) − H(T)) ]

with H(t) = ∫_t^∞ (α+τ)^-(r+x) (β+τ)^-(s+1) dτ. The published form writes H through
₂F₁(r+s+x, s+1; r+s+x+1; (α−β)/(α+t)), which is numerically fragile: it diverges like
(1−z)^-s as z → 1 and has huge parameters for heavy buyers. We use Euler's transformation,

    H(t) = (α+t)^-(r+x) (β+t)^-s · F(t) / (r+s+x),   F(t) = ₂F₁(1, r+x; r+s+x+1; z),

whose series has positive terms bounded by (r+s+x)/s for z ∈ [0, 1); for z < 0 (α < β) the
Pfaff transformation F = ₂F₁(1, s+1; r+s+x+1; z/(z−1)) / (1−z) keeps the argument in [0, 1).
Everything else is summed in log space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, hyp2f1

from winback.analytics._fit import (
    FitResult,
    FloatArray,
    NotEnoughData,
    as_float,
    compress,
    maximise_bounded,
)

NAMES = ("r", "alpha", "s", "beta")
#: Bounds of the working parameters log r, log α, log s and log(s/β) (the log of the mean
#: drop-out rate). When the data have nearly homogeneous lifetimes the likelihood keeps
#: rising as s and β grow together (a ridge towards a point mass of μ); the fit then stops at
#: s = e^4 ≈ 55, a coefficient of variation of μ of 13.5 %, with the mean rate s/β where the
#: data put it, instead of running into overflow (SciPy's ₂F₁ also returns NaN beyond
#: s ≈ 300 near z = 1, and its series slows down well before). On generated shops the bound
#: costs about 1 unit of log-likelihood per 5,000 customers against the ridge's supremum.
BOUNDS = ((-9.0, 9.0), (-9.0, 12.0), (-9.0, 4.0), (-20.0, 5.0))
WORKING = ("r", "alpha", "s", "s/beta")


def _params(z: FloatArray) -> FloatArray:
    """(r, α, s, β) from the working parameters (log r, log α, log s, log(s/β))."""
    r, alpha, s, rate = np.exp(z)
    return np.array([r, alpha, s, s / rate])


def _working(params: tuple[float, float, float, float]) -> list[float]:
    r, alpha, s, beta = params
    return [float(np.log(r)), float(np.log(alpha)), float(np.log(s)), float(np.log(s / beta))]


def _log_H(
    t: FloatArray, x: FloatArray, r: float, alpha: float, s: float, beta: float
) -> FloatArray:
    """log H(t) = log[(α+t)^-(r+x) (β+t)^-s F(t) / (r+s+x)] (see the module docstring)."""
    rx = r + x
    c = rx + s + 1.0
    z = (alpha - beta) / (alpha + t)
    with np.errstate(all="ignore"):
        if alpha >= beta:
            log_f = np.log(hyp2f1(1.0, rx, c, z))
        else:
            w = z / (z - 1.0)
            log_f = np.log(hyp2f1(1.0, s + 1.0, c, w)) - np.log1p(-z)
    result: FloatArray = -rx * np.log(alpha + t) - s * np.log(beta + t) + log_f - np.log(rx + s)
    return result


class _Pairs:
    """Distinct (x, t) pairs of a column of times and, per row, the index of its pair: H is
    a ₂F₁ per pair, and a shop has far fewer distinct (x, t_x) and (x, T) pairs than
    customers."""

    def __init__(self, x: FloatArray, t: FloatArray) -> None:
        rows, inverse = np.unique(np.column_stack([x, t]), axis=0, return_inverse=True)
        self.x, self.t = rows[:, 0], rows[:, 1]
        self.index = inverse.reshape(-1)

    def log_H(self, params: FloatArray) -> FloatArray:
        r, alpha, s, beta = params
        gathered: FloatArray = _log_H(self.t, self.x, r, alpha, s, beta)[self.index]
        return gathered


def _parts(
    params: FloatArray,
    x: FloatArray,
    t_x: FloatArray,
    T: FloatArray,
    pairs: tuple[_Pairs, _Pairs] | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(log of the constant, log of the alive-at-T term, log of the whole bracket)."""
    r, alpha, s, beta = params
    const = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    l1 = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    at_tx, at_T = pairs or (_Pairs(x, t_x), _Pairs(x, T))
    lh_tx = at_tx.log_H(params)
    lh_T = at_T.log_H(params)
    m = np.maximum(l1, lh_tx)
    with np.errstate(all="ignore"):
        inner = np.exp(l1 - m) + s * (np.exp(lh_tx - m) - np.exp(lh_T - m))
        bracket = m + np.log(np.maximum(inner, np.exp(l1 - m)))
    return const, l1, bracket


def log_likelihood(
    params: tuple[float, float, float, float], x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    """Per-customer log-likelihood."""
    const, _, bracket = _parts(np.asarray(params, dtype=np.float64), x, t_x, T)
    result: FloatArray = const + bracket
    return result


@dataclass(frozen=True)
class ParetoNBD:
    """A fitted Pareto/NBD model. Time is in the unit of the data it was fitted on."""

    r: float
    alpha: float
    s: float
    beta: float
    fit: FitResult | None = None

    name = "pareto-nbd"

    @classmethod
    def fitted(
        cls,
        frequency: FloatArray,
        recency: FloatArray,
        T: FloatArray,
        *,
        initial: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    ) -> ParetoNBD:
        """Maximum likelihood fit: L-BFGS-B over log r, log α, log s and log(s/β) within
        :data:`BOUNDS` (see :func:`winback.analytics._fit.maximise_bounded`)."""
        x, t, TT = as_float(frequency), as_float(recency), as_float(T)
        if len(x) < 3:
            raise NotEnoughData(f"a Pareto/NBD fit needs at least 3 customers, got {len(x)}")
        (ux, ut, uT), w = compress(x, t, TT)
        n = len(x)
        pairs = (_Pairs(ux, ut), _Pairs(ux, uT))

        def neg(z: FloatArray) -> float:
            const, _, bracket = _parts(_params(z), ux, ut, uT, pairs)
            return -float(np.dot(w, const + bracket)) / n

        res = maximise_bounded(
            "pareto-nbd", NAMES, neg, _params, _working(initial), BOUNDS, n, working=WORKING
        )
        p = res.params
        return cls(p["r"], p["alpha"], p["s"], p["beta"], res)

    @property
    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "s": self.s, "beta": self.beta}

    def probability_alive(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """P(alive | x, t_x, T): the share of the likelihood in which the customer is still
        alive at T."""
        p = np.array([self.r, self.alpha, self.s, self.beta])
        _, l1, bracket = _parts(p, as_float(x), as_float(t_x), as_float(T))
        result: FloatArray = np.clip(np.exp(l1 - bracket), 0.0, 1.0)
        return result

    def expected_purchases(
        self, t: float | FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T] = (r+x)(β+T) / ((α+T)(s−1)) · [1 − ((β+T)/(β+T+t))^(s−1)]
        · P(alive), evaluated with expm1/log1p (and its limit at s = 1)."""
        x, T = as_float(x), as_float(T)
        result: FloatArray = self.expected_purchases_if_alive(t, x, T) * self.probability_alive(
            x, t_x, T
        )
        return result

    def expected_purchases_if_alive(
        self, t: float | FloatArray, x: FloatArray, T: FloatArray
    ) -> FloatArray:
        """The factor of E[Y(t) | x, t_x, T] that multiplies P(alive) (depends on x, T)."""
        x, T, t = as_float(x), as_float(T), as_float(t)
        g = np.log1p(t / (self.beta + T))
        sm1 = self.s - 1.0
        factor = g if abs(sm1) < 1e-10 else -np.expm1(-sm1 * g) / sm1
        return (self.r + x) * (self.beta + T) / (self.alpha + T) * factor

    def expected_purchases_new(self, t: float | FloatArray) -> FloatArray:
        """E[X(t)] of a customer who has just arrived: rβ/(α(s−1)) [1 − (β/(β+t))^(s−1)]."""
        t = as_float(t)
        g = np.log1p(t / self.beta)
        sm1 = self.s - 1.0
        factor = g if abs(sm1) < 1e-10 else -np.expm1(-sm1 * g) / sm1
        return self.r * self.beta / self.alpha * factor

    def posterior_rate(self, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
        """E[λ | alive, x, T] = (r + x) / (α + T)."""
        return (self.r + as_float(x)) / (self.alpha + as_float(T))
