"""What the three models share: weighted compression of the data, maximum likelihood in
log-parameter space with analytic or numerical gradients, and a convergence report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaincinv

from winback.errors import WinbackError

FloatArray = np.ndarray  # float64 arrays (loosely typed: NumPy stubs are too strict)


class ModelNotConverged(WinbackError):
    """Maximum likelihood estimation did not converge."""


class NotEnoughData(WinbackError):
    """Too few customers (or repeat customers) to fit a model."""


@dataclass(frozen=True)
class FitResult:
    """Fitted parameters with the literature's names, the maximised log-likelihood and how
    the optimiser got there."""

    model: str
    params: dict[str, float]
    log_likelihood: float
    n: int
    converged: bool
    iterations: int
    evaluations: int
    gradient_norm: float
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "params": dict(self.params),
            "log_likelihood": self.log_likelihood,
            "customers": self.n,
            "converged": self.converged,
            "iterations": self.iterations,
            "evaluations": self.evaluations,
            "gradient_norm": self.gradient_norm,
            "message": self.message,
            **self.extra,
        }


def compress(*columns: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """Distinct rows of the given columns and how often each occurs: the likelihood is a
    sum over customers, so identical customers are evaluated once and weighted."""
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    n = len(cols[0]) if cols else 0
    if n == 0:
        return [np.zeros(0) for _ in cols], np.zeros(0)
    order = np.lexsort(cols[::-1])
    sorted_cols = [c[order] for c in cols]
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = False
    for c in sorted_cols:
        new[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    return [c[starts] for c in sorted_cols], counts


class Distinct:
    """A column as its distinct values and, per row, the index of its value: functions of
    the column are evaluated on the few distinct values and gathered."""

    def __init__(self, values: FloatArray) -> None:
        self.values, self.index = np.unique(values, return_inverse=True)

    def subset(self, rows: np.ndarray) -> Distinct:
        out = Distinct.__new__(Distinct)
        out.values, out.index = self.values, self.index[rows]
        return out

    def gather(self, per_value: FloatArray) -> FloatArray:
        return per_value[self.index]


def maximise(
    model: str,
    names: Sequence[str],
    neg_ll: Callable[[FloatArray], tuple[float, FloatArray | None]],
    x0: Sequence[float],
    n: int,
    *,
    has_gradient: bool,
    tol: float = 1e-8,
    maxiter: int = 2000,
) -> FitResult:
    """Minimise ``neg_ll`` (mean negative log-likelihood as a function of log-parameters).

    With an analytic gradient: BFGS. Without: Nelder-Mead, then BFGS on finite differences to
    polish. The result reports convergence honestly (``converged`` and the gradient norm).
    """
    start = np.log(np.asarray(x0, dtype=np.float64))
    evaluations = 0

    def value(z: FloatArray) -> float:
        nonlocal evaluations
        evaluations += 1
        v = neg_ll(z)[0]
        return v if np.isfinite(v) else 1e300

    def value_grad(z: FloatArray) -> tuple[float, FloatArray]:
        nonlocal evaluations
        evaluations += 1
        v, g = neg_ll(z)
        assert g is not None
        if not np.isfinite(v):
            return 1e300, np.zeros_like(z)
        return v, g

    from threadpoolctl import threadpool_limits

    # Vectors of a few hundred thousand: BLAS threads only add contention.
    with np.errstate(all="ignore"), threadpool_limits(1):
        if has_gradient:
            res = minimize(
                value_grad,
                start,
                jac=True,
                method="BFGS",
                options={"gtol": tol, "maxiter": maxiter},
            )
            grad = value_grad(res.x)[1]
        else:
            res = minimize(
                value,
                start,
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": maxiter * 5},
            )
            res2 = minimize(value, res.x, method="BFGS", options={"gtol": 1e-9, "maxiter": 200})
            nit = int(res.nit) + int(res2.nit)
            if res2.fun <= res.fun:
                res = res2
            res.nit = nit
            grad = _numeric_grad(value, res.x)
    gnorm = float(np.max(np.abs(grad))) if len(grad) else 0.0
    with np.errstate(over="ignore"):  # a diverging fit gives inf: reported as not converged
        params = {name: float(v) for name, v in zip(names, np.exp(res.x), strict=True)}
    ll = -float(res.fun) * n
    converged = (
        bool(np.isfinite(ll))
        and gnorm < 1e-4
        and all(np.isfinite(v) and 0 < v < 1e12 for v in params.values())
    )
    return FitResult(
        model=model,
        params=params,
        log_likelihood=ll,
        n=n,
        converged=converged,
        iterations=int(getattr(res, "nit", 0)),
        evaluations=evaluations,
        gradient_norm=gnorm,
        message=str(res.message),
    )


def maximise_bounded(
    model: str,
    names: Sequence[str],
    neg_ll: Callable[[FloatArray], float],
    to_params: Callable[[FloatArray], FloatArray],
    z0: Sequence[float],
    bounds: Sequence[tuple[float, float]],
    n: int,
    *,
    working: Sequence[str] = (),
    maxiter: int = 500,
) -> FitResult:
    """Minimise ``neg_ll`` (mean negative log-likelihood of working parameters ``z``) inside
    ``bounds`` with L-BFGS-B and central-difference gradients; ``to_params`` maps ``z`` to the
    named parameters. A likelihood whose supremum lies at infinity (a ridge) stops at a bound
    instead of drifting into overflow: the fit is converged when the projected gradient
    vanishes (the Karush-Kuhn-Tucker conditions), and ``extra["at_bound"]`` names (from
    ``working``) the working parameters that sit on a bound."""
    evaluations = 0

    def value(z: FloatArray) -> float:
        nonlocal evaluations
        evaluations += 1
        v = neg_ll(z)
        return v if np.isfinite(v) else 1e300

    def value_grad(z: FloatArray) -> tuple[float, FloatArray]:
        # A step of 1e-4 in log space: truncation error ~1e-8, while the cancellation in a
        # likelihood of special functions (~1e-10 relative) stays below 1e-6 of the gradient.
        return value(z), _numeric_grad(value, z, h=1e-4)

    from threadpoolctl import threadpool_limits

    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    with np.errstate(all="ignore"), threadpool_limits(1):
        res = minimize(
            value_grad,
            np.clip(np.asarray(z0, dtype=np.float64), lo, hi),
            jac=True,
            method="L-BFGS-B",
            bounds=list(bounds),
            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-9},
        )
        grad = _numeric_grad(value, res.x, h=1e-4)
    at_low, at_high = res.x <= lo + 1e-9, res.x >= hi - 1e-9
    projected = np.where((at_low & (grad > 0)) | (at_high & (grad < 0)), 0.0, grad)
    gnorm = float(np.max(np.abs(projected))) if len(grad) else 0.0
    with np.errstate(over="ignore"):
        values = to_params(res.x)
    params = {name: float(v) for name, v in zip(names, values, strict=True)}
    ll = -float(res.fun) * n
    converged = bool(np.isfinite(ll)) and gnorm < 1e-4 and all(np.isfinite(list(params.values())))
    return FitResult(
        model=model,
        params=params,
        log_likelihood=ll,
        n=n,
        converged=converged,
        iterations=int(res.nit),
        evaluations=evaluations,
        gradient_norm=gnorm,
        message=str(res.message),
        extra={
            "at_bound": [
                working[i] if i < len(working) else str(i)
                for i, b in enumerate(at_low | at_high)
                if b
            ]
        },
    )


def _numeric_grad(f: Callable[[FloatArray], float], z: FloatArray, h: float = 1e-6) -> FloatArray:
    g = np.zeros_like(z)
    for i in range(len(z)):
        e = np.zeros_like(z)
        e[i] = h
        g[i] = (f(z + e) - f(z - e)) / (2 * h)
    return g


def distinct_pairs(x: FloatArray, T: FloatArray) -> tuple[FloatArray, FloatArray, np.ndarray]:
    """Distinct (x, T) rows and the index of each customer's row."""
    x, T = np.asarray(x, dtype=np.float64), np.asarray(T, dtype=np.float64)
    if len(x) == 0:
        return x, T, np.zeros(0, dtype=np.int64)
    order = np.lexsort((T, x))
    xs, Ts = x[order], T[order]
    new = np.empty(len(x), dtype=bool)
    new[0] = True
    new[1:] = (xs[1:] != xs[:-1]) | (Ts[1:] != Ts[:-1])
    group = np.cumsum(new) - 1
    inverse = np.empty(len(x), dtype=np.int64)
    inverse[order] = group
    return xs[new], Ts[new], inverse


def as_float(values: Any) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


#: Range of a Beta dropout parameter (a or b) in a fit. The likelihood of data whose dropout
#: probability p is the same for every customer grows without bound as a, b → ∞ at a fixed
#: ratio: the Beta(a, b) mixing distribution tends to a point mass at a / (a + b); of data
#: without dropout, it also grows as a → 0 (a point mass at p = 0: the NBD). At a + b ≥ 10⁶
#: the Beta's standard deviation is below 10⁻³ of the range of p, and at a = 10⁻⁶ its mean is
#: below 10⁻⁶: the bounded model is the limit model for every practical purpose.
BETA_BOUNDS = (1e-6, 1e6)

#: Beyond this concentration a + β, scipy's ₂F₁ is no longer trusted for the expectations.
_HYP2F1_CONCENTRATION = 1e4
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)
_QUANTILES, _QWEIGHTS = (_NODES + 1.0) / 2.0, _WEIGHTS / 2.0


def maximise_within(
    model: str,
    names: Sequence[str],
    neg_ll: Callable[[FloatArray], tuple[float, FloatArray | None]],
    x0: Sequence[float],
    n: int,
    limits: dict[str, tuple[float, float]],
) -> FitResult:
    """:func:`maximise` (BFGS on log-parameters, analytic gradient), then, when a parameter
    named in ``limits`` ends outside its range (a likelihood whose supremum lies at the
    model's boundary, at 0 or infinity), the same likelihood maximised again with L-BFGS-B
    and those parameters bounded. ``extra["at_bound"]`` names the parameters that end on a
    bound (empty when none); such a fit is converged when the projected gradient vanishes."""
    first = maximise(model, names, neg_ll, x0, n, has_gradient=True)
    outside = [n_ for n_, (lo_, hi_) in limits.items() if not lo_ <= first.params[n_] <= hi_]
    if not outside:
        return FitResult(**{**first.__dict__, "extra": {**first.extra, "at_bound": []}})
    lo = np.array([np.log(limits[name][0]) if name in limits else -np.inf for name in names])
    hi = np.array([np.log(limits[name][1]) if name in limits else np.inf for name in names])
    with np.errstate(divide="ignore", over="ignore"):
        start = np.log(np.asarray([first.params[name] for name in names], dtype=np.float64))
    start = np.clip(np.where(np.isnan(start), 0.0, start), lo, hi)
    start = np.where(np.isfinite(start), start, 0.0)
    evaluations = first.evaluations

    def value_grad(z: FloatArray) -> tuple[float, FloatArray]:
        nonlocal evaluations
        evaluations += 1
        v, g = neg_ll(z)
        assert g is not None
        return (v, g) if np.isfinite(v) else (1e300, np.zeros_like(z))

    from threadpoolctl import threadpool_limits

    bounds = [
        (float(lo_) if np.isfinite(lo_) else None, float(hi_) if np.isfinite(hi_) else None)
        for lo_, hi_ in zip(lo, hi, strict=True)
    ]
    with np.errstate(all="ignore"), threadpool_limits(1):
        res = minimize(
            value_grad,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9},
        )
        grad = value_grad(res.x)[1]
    at_low, at_high = res.x <= lo + 1e-9, res.x >= hi - 1e-9
    projected = np.where((at_low & (grad > 0)) | (at_high & (grad < 0)), 0.0, grad)
    gnorm = float(np.max(np.abs(projected)))
    params = {name: float(v) for name, v in zip(names, np.exp(res.x), strict=True)}
    ll = -float(res.fun) * n
    return FitResult(
        model=model,
        params=params,
        log_likelihood=ll,
        n=n,
        converged=bool(np.isfinite(ll)) and gnorm < 1e-4,
        iterations=first.iterations + int(res.nit),
        evaluations=evaluations,
        gradient_norm=gnorm,
        message=str(res.message),
        extra={"at_bound": [nm for nm, hit in zip(names, at_low | at_high, strict=True) if hit]},
    )


def dropout_mean(
    k: float | FloatArray,
    u: float | FloatArray,
    a: float,
    beta: float | FloatArray,
    closed_form: FloatArray,
) -> FloatArray:
    """E[(1 − (1 + p u)^(−k)) / p] for p ~ Beta(a, β): the expected purchases in a period of
    the BG/NBD family, given alive, with λ integrated out (k = r + x, u = t / (α + T)).

    ``closed_form`` is the same quantity through the models' ₂F₁ formula, exact where scipy
    evaluates it well. Where it is not finite, out of the quantity's bounds
    [1 − (1 + u)^(−k), k u], or the Beta is concentrated (a + β > 10⁴, where ₂F₁'s
    parameters are large), the expectation is taken by Gauss-Legendre quadrature on the
    Beta's quantile scale, p = I⁻¹(q; a, β): bounded integrand, no cancellation, finite for
    every finite input, and tending to the NBD's k u as p → 0."""
    k, u, beta = np.broadcast_arrays(as_float(k), as_float(u), as_float(beta))
    closed = np.broadcast_to(as_float(closed_form), k.shape)
    with np.errstate(all="ignore"):
        upper = k * u
        lower = -np.expm1(-k * np.log1p(u))
        slack = 1e-9 * upper
        trusted = (
            np.isfinite(closed)
            & (closed >= lower - slack)
            & (closed <= upper + slack)
            & (a + beta <= _HYP2F1_CONCENTRATION)
        )
    out = np.array(closed, dtype=np.float64, copy=True)
    todo = ~trusted
    if np.any(todo):
        ks, us, bs = k[todo], u[todo], beta[todo]
        distinct, inverse = np.unique(bs, return_inverse=True)
        nodes = betaincinv(a, distinct[:, None], _QUANTILES[None, :])[inverse]
        with np.errstate(all="ignore"):
            safe = np.where(nodes > 0, nodes, 1.0)
            f = np.where(
                nodes > 0,
                -np.expm1(-ks[:, None] * np.log1p(nodes * us[:, None])) / safe,
                (ks * us)[:, None],
            )
        out[todo] = f @ _QWEIGHTS
    return out
