"""Incremental lift of a flow over its holdout (or over the workspace-wide control group):
the difference in conversion rate and in revenue per contact, each with a 95 % interval, and
the minimum detectable effect at the current sample size.

- **Conversion**: the difference of two proportions with Newcombe's hybrid score interval
  (Newcombe 1998, "Interval estimation for the difference between independent proportions:
  comparison of eleven methods", *Statistics in Medicine* 17, method 10): the Wilson score
  intervals of both rates combined by the square-and-add rule. It keeps close to nominal
  coverage for small counts and rates near 0, where the Wald interval collapses.
- **Revenue per contact**: zero for most contacts and heavy-tailed for the rest. Seen as
  two parts (Aitchison 1955; Tu and Zhou 1999), a group's revenue per contact is the
  conversion rate p times the mean spend μ of its buyers, and the variance of its mean over n
  contacts is (p·σ² + p(1 − p)·μ²) / n, σ² the variance of spend among buyers. Welch's
  interval (Welch 1947) estimates σ² from each group's own buyers; in a small holdout (a few
  dozen buyers) that estimate is low exactly when the sample misses the tail, which also
  makes the group's mean low, so the interval is too narrow where it is off centre and
  under-covers. The two-part interval takes for each group the larger of its own σ² and the
  σ² pooled over the buyers of both groups: the small group borrows the large group's view of
  the tail, and neither group's variance falls below what its own buyers show, so it stays
  valid when the flow changes how much buyers spend. The interval is d ± t·SE with
  Welch–Satterthwaite degrees of freedom; ``welch_interval`` is kept for comparison
  (benchmarks/bench_results.py measures both). With fewer than ``MIN_BUYERS`` buyers in a
  group no interval is given.
- **Minimum detectable effect** at 80 % power and 5 % two-sided: (z₀.₉₇₅ + z₀.₈) · SE, with
  the standard error of the difference under no effect (the pooled rate for conversion, the
  two-part variances for revenue).

Pure functions of counts and arrays; nothing here reads the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from winback.analytics._fit import FloatArray

LEVEL = 0.95
POWER = 0.80
#: Fewer buyers than this in a group: the revenue interval is not computed.
MIN_BUYERS = 2
REVENUE_METHOD = "two-part"


class Verdict(StrEnum):
    """How to read a lift: a difference whose interval excludes zero, or not enough data
    (the interval spans zero and the minimum detectable effect exceeds the threshold), or no
    effect of the threshold's size (the interval spans zero although such an effect would
    likely have been seen)."""

    LIFT = "lift"
    LOSS = "loss"
    NOT_ENOUGH_DATA = "not enough data yet"
    NO_EFFECT = "no effect detected"


@dataclass(frozen=True)
class Lift:
    """Treatment minus control on one metric, with its interval and the minimum detectable
    effect (all in the metric's unit: a rate, or money per contact)."""

    metric: str
    treatment: float
    control: float
    difference: float
    low: float
    high: float
    level: float
    mde: float
    n_treatment: int
    n_control: int
    method: str
    verdict: Verdict

    @property
    def relative(self) -> float | None:
        """The difference as a share of the control value (None when the control is 0)."""
        return self.difference / self.control if self.control else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the verdict as text, infinite bounds and MDE (no data) as None."""
        d = asdict(self)
        d["verdict"] = str(self.verdict)
        d["relative"] = self.relative
        for key in ("low", "high", "mde"):
            if not np.isfinite(d[key]):
                d[key] = None
        return d


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval for a proportion (Wilson 1927), without continuity correction."""
    _check_counts(successes, trials)
    if trials == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(
    s1: int, n1: int, s2: int, n2: int, level: float = LEVEL
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 (method 10):
    L = d − √((p1 − l1)² + (u2 − p2)²), U = d + √((u1 − p1)² + (p2 − l2)²), where (lᵢ, uᵢ)
    are the Wilson intervals of the two rates."""
    if n1 == 0 or n2 == 0:
        raise ValueError(f"both groups need contacts (treatment {n1}, control {n2})")
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, level)
    l2, u2 = wilson_interval(s2, n2, level)
    d = p1 - p2
    low = d - float(np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    high = d + float(np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    return low, high


def conversion_mde(
    n_treatment: int, n_control: int, rate: float, level: float = LEVEL, power: float = POWER
) -> float:
    """Smallest difference of rates detected with probability ``power`` by a two-sided test at
    1 − ``level``, around the base ``rate`` (normal approximation)."""
    if n_treatment == 0 or n_control == 0:
        return float("inf")
    z = float(norm.ppf(0.5 + level / 2) + norm.ppf(power))
    var = rate * (1 - rate) * (1 / n_treatment + 1 / n_control)
    return z * float(np.sqrt(var))


def required_contacts(
    rate: float, effect: float, holdout_share: float, level: float = LEVEL, power: float = POWER
) -> int:
    """Contacts in all (treatment and holdout together) for a difference of ``effect`` in
    conversion rate around ``rate`` to be the minimum detectable effect, with a holdout of
    ``holdout_share``: n = (z₁ + z₂)² p(1 − p) (1/(1 − h) + 1/h) / δ². What "not enough data
    yet" can be completed with ("about n contacts are needed")."""
    if not 0 < rate < 1 or effect <= 0 or not 0 < holdout_share < 1:
        raise ValueError(
            f"expected 0 < rate < 1, effect > 0 and 0 < holdout share < 1, got rate {rate}, "
            f"effect {effect}, holdout share {holdout_share}"
        )
    z = float(norm.ppf(0.5 + level / 2) + norm.ppf(power))
    n = z * z * rate * (1 - rate) * (1 / (1 - holdout_share) + 1 / holdout_share) / effect**2
    return int(np.ceil(n))


def conversion_lift(
    treatment_conversions: int,
    treatment_contacts: int,
    control_conversions: int,
    control_contacts: int,
    *,
    max_relative_mde: float,
    level: float = LEVEL,
) -> Lift:
    """Incremental conversion rate (treatment rate − control rate) with Newcombe's interval
    and the minimum detectable effect; ``max_relative_mde`` is the declared threshold, as a
    share of the control rate, above which the verdict is "not enough data yet"."""
    s1, n1, s2, n2 = (
        treatment_conversions,
        treatment_contacts,
        control_conversions,
        control_contacts,
    )
    _check_counts(s1, n1)
    _check_counts(s2, n2)
    if n1 == 0 or n2 == 0:
        return _empty("conversion", n1, n2, "newcombe-wilson")
    low, high = newcombe_interval(s1, n1, s2, n2, level)
    pooled = (s1 + s2) / (n1 + n2)
    mde = conversion_mde(n1, n2, pooled, level)
    p1, p2 = s1 / n1, s2 / n2
    verdict = _verdict(low, high, mde, p2 * max_relative_mde if p2 > 0 else 0.0)
    return Lift("conversion", p1, p2, p1 - p2, low, high, level, mde, n1, n2,
                "newcombe-wilson", verdict)  # fmt: skip


def _nonnegative(revenue: FloatArray) -> FloatArray:
    values = np.asarray(revenue, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("revenue per contact must be finite and non-negative")
    return values


def _t_interval(
    d: float, a: float, b: float, n1: int, n2: int, level: float
) -> tuple[float, float]:
    """d ± t·√(a + b), t with the Welch–Satterthwaite degrees of freedom of the two variance
    terms ``a`` and ``b`` of groups of ``n1`` and ``n2``."""
    se = float(np.sqrt(a + b))
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    return d - half, d + half


def welch_interval(
    treatment_revenue: FloatArray, control_revenue: FloatArray, level: float = LEVEL
) -> tuple[float, float]:
    """Welch's interval for the difference of two means: each group's variance from its own
    values. Needs two values per group and a positive variance."""
    t, c = _nonnegative(treatment_revenue), _nonnegative(control_revenue)
    n1, n2 = len(t), len(c)
    if n1 < 2 or n2 < 2:
        raise ValueError(f"both groups need two contacts (treatment {n1}, control {n2})")
    a, b = float(t.var(ddof=1)) / n1, float(c.var(ddof=1)) / n2
    if a + b == 0:
        raise ValueError("no variance in either group")
    return _t_interval(float(t.mean() - c.mean()), a, b, n1, n2, level)


@dataclass(frozen=True)
class _TwoPart:
    """One group's revenue per contact as conversion × spend per buyer."""

    contacts: int
    buyers: int
    mean: float  # revenue per contact
    buyer_mean: float  # μ: spend per buyer
    buyer_ss: float  # Σ (spend − μ)² over the buyers

    @classmethod
    def of(cls, revenue: FloatArray) -> _TwoPart:
        values = _nonnegative(revenue)
        spend = values[values > 0]
        k = len(spend)
        mu = float(spend.mean()) if k else 0.0
        ss = float(np.square(spend - mu).sum()) if k else 0.0
        return cls(len(values), k, float(values.mean()) if len(values) else 0.0, mu, ss)

    def variance_of_mean(self, pooled_spend_var: float) -> float:
        """(p·σ² + p(1 − p)·μ²) / n with σ² the larger of this group's spend variance among
        buyers and ``pooled_spend_var``."""
        n, k = self.contacts, self.buyers
        if k == 0:
            return 0.0
        own = self.buyer_ss / (k - 1) if k > 1 else 0.0
        p = k / n
        return (p * max(own, pooled_spend_var) + p * (1 - p) * self.buyer_mean**2) / n


def _two_part_variances(t: _TwoPart, c: _TwoPart) -> tuple[float, float]:
    """The variances of both groups' means, with the spend variance pooled over the buyers
    of both groups when each has ``MIN_BUYERS``."""
    pooled = 0.0
    if min(t.buyers, c.buyers) >= MIN_BUYERS:
        pooled = (t.buyer_ss + c.buyer_ss) / (t.buyers + c.buyers - 2)
    return t.variance_of_mean(pooled), c.variance_of_mean(pooled)


def two_part_interval(
    treatment_revenue: FloatArray, control_revenue: FloatArray, level: float = LEVEL
) -> tuple[float, float]:
    """The two-part interval of the difference of revenue per contact (module docstring).
    Needs ``MIN_BUYERS`` buyers in each group and a positive variance."""
    t, c = _TwoPart.of(treatment_revenue), _TwoPart.of(control_revenue)
    if min(t.buyers, c.buyers) < MIN_BUYERS:
        raise ValueError(
            f"both groups need {MIN_BUYERS} buyers (treatment {t.buyers}, control {c.buyers})"
        )
    a, b = _two_part_variances(t, c)
    if a + b == 0:
        raise ValueError("no variance in either group")
    return _t_interval(t.mean - c.mean, a, b, t.contacts, c.contacts, level)


def revenue_lift(
    treatment_revenue: FloatArray,
    control_revenue: FloatArray,
    *,
    max_relative_mde: float,
    level: float = LEVEL,
) -> Lift:
    """Incremental revenue per contact (mean of ``treatment_revenue`` − mean of
    ``control_revenue``, one entry per contact, 0 for contacts who did not buy) with the
    two-part interval (see the module docstring) and the minimum detectable effect;
    ``max_relative_mde`` is the declared threshold as a share of the control's revenue per
    contact."""
    t, c = _TwoPart.of(treatment_revenue), _TwoPart.of(control_revenue)
    n1, n2 = t.contacts, c.contacts
    if n1 < 2 or n2 < 2:
        return _empty("revenue_per_contact", n1, n2, REVENUE_METHOD)
    d = t.mean - c.mean
    a, b = _two_part_variances(t, c)
    se = float(np.sqrt(a + b))
    if min(t.buyers, c.buyers) < MIN_BUYERS or se == 0:
        low, high = -float("inf"), float("inf")
    else:
        low, high = _t_interval(d, a, b, n1, n2, level)
    mde = float(norm.ppf(0.5 + level / 2) + norm.ppf(POWER)) * se
    verdict = _verdict(low, high, mde, c.mean * max_relative_mde if c.mean > 0 else 0.0)
    return Lift("revenue_per_contact", t.mean, c.mean, d, low, high, level, mde, n1, n2,
                REVENUE_METHOD, verdict)  # fmt: skip


def _verdict(low: float, high: float, mde: float, threshold: float) -> Verdict:
    if low > 0:
        return Verdict.LIFT
    if high < 0:
        return Verdict.LOSS
    if threshold <= 0 or mde > threshold:
        return Verdict.NOT_ENOUGH_DATA
    return Verdict.NO_EFFECT


def _empty(metric: str, n1: int, n2: int, method: str) -> Lift:
    inf = float("inf")
    return Lift(metric, 0.0, 0.0, 0.0, -inf, inf, LEVEL, inf, n1, n2, method,
                Verdict.NOT_ENOUGH_DATA)  # fmt: skip


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"expected 0 <= successes <= trials, got {successes} of {trials}")


# -- the workspace-wide control group ---------------------------------------------------------


def control_bucket(contact_id: int | str, salt: str) -> float:
    """A contact's stable position in [0, 1): the first 8 bytes of BLAKE2b(salt, id). The
    same id and salt always give the same position, on every machine and Python version."""
    digest = hashlib.blake2b(f"{salt}\x1f{contact_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_control_group(contact_id: int | str, *, share: float, salt: str) -> bool:
    """Whether a contact belongs to the workspace-wide control group: the ``share`` of
    contacts (setting ``control_group_share``) whose bucket falls below it. Raising the share
    keeps every current member and adds new ones; changing ``control_group_salt`` draws a new
    group."""
    if not 0 <= share < 1:
        raise ValueError(f"control group share must be in [0, 1), got {share}")
    return share > 0 and control_bucket(contact_id, salt) < share
