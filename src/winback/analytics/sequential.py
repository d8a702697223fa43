"""The A/B winner rule: an always-valid sequential test, so that looking at the results every
day does not inflate the chance of a false winner.

The mixture sequential probability ratio test (mSPRT; Robbins 1970; Johari, Koomen, Pekelis and
Walsh 2017, "Peeking at A/B tests", KDD, and 2022, *Operations Research* 70(3)) with a normal
mixture N(0, τ²) over the difference θ = p_B − p_A of two conversion rates. With the observed
difference θ̂ and its variance V = p̂_A(1 − p̂_A)/n_A + p̂_B(1 − p̂_B)/n_B,

    Λ = √(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²)))

is (asymptotically) a martingale under θ = 0, so by Ville's inequality P(Λ ever ≥ 1/α) ≤ α:
the always-valid p-value min(1, 1/Λ) may be checked after every new contact. Rates are
shrunk to (s + ½)/(n + 1) inside V so that a group with no conversions yet has a positive
variance.

With k variants the leader (highest rate) is compared with every other one; each of the
k(k − 1)/2 pairs is held to α / (k(k − 1)/2) (Bonferroni), so a false winner has probability
at most α whichever pair leads. A winner is declared at the first look at which every variant
has ``min_contacts`` and the leader beats all others; the decision then stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from winback.config import Settings

Counts = Mapping[str, tuple[int, int]]
"""Per variant: (successes, trials), cumulative at one look."""


@dataclass(frozen=True)
class WinnerRule:
    """The rule's declared parameters (settings ``winner_alpha``, ``winner_mixture_sd``,
    ``winner_min_contacts``)."""

    alpha: float = 0.05
    mixture_sd: float = 0.02
    min_contacts: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> WinnerRule:
        return cls(settings.winner_alpha, settings.winner_mixture_sd, settings.winner_min_contacts)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.mixture_sd <= 0:
            raise ValueError(f"mixture_sd must be positive, got {self.mixture_sd}")
        if self.min_contacts < 1:
            raise ValueError(f"min_contacts must be at least 1, got {self.min_contacts}")


@dataclass(frozen=True)
class Comparison:
    leader: str
    other: str
    difference: float
    p_value: float


@dataclass(frozen=True)
class Decision:
    """The rule's answer: ``winner`` (None: no winner yet), the always-valid p-value of the
    leader against the closest other variant (Bonferroni-adjusted), the look at which the
    winner was declared (0-based, over ``history`` then the current counts), the rates and the
    rule's parameters."""

    winner: str | None
    leader: str | None
    p_value: float
    look: int | None
    rates: dict[str, float]
    comparisons: list[Comparison]
    rule: WinnerRule
    reason: str
    trials: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def msprt_p_value(s_a: int, n_a: int, s_b: int, n_b: int, mixture_sd: float) -> float:
    """Always-valid p-value min(1, 1/Λ) of the normal-mixture SPRT for p_B − p_A at one look."""
    for s, n in ((s_a, n_a), (s_b, n_b)):
        if n < 1 or not 0 <= s <= n:
            raise ValueError(f"expected 0 <= successes <= trials and trials >= 1, got {s} of {n}")
    theta = s_b / n_b - s_a / n_a
    qa, qb = (s_a + 0.5) / (n_a + 1), (s_b + 0.5) / (n_b + 1)
    v = qa * (1 - qa) / n_a + qb * (1 - qb) / n_b
    t2 = mixture_sd * mixture_sd
    log_lambda = 0.5 * np.log(v / (v + t2)) + t2 * theta * theta / (2 * v * (v + t2))
    return float(min(1.0, np.exp(-log_lambda)))


def decide(
    counts: Counts, *, rule: WinnerRule | None = None, history: Sequence[Counts] = ()
) -> Decision:
    """Apply the rule at every look of ``history`` (earlier cumulative counts, oldest first)
    and then at ``counts``; the first look that declares a winner decides."""
    rule = rule or WinnerRule()
    looks = [*history, counts]
    last: Decision | None = None
    for i, look in enumerate(looks):
        last = _at_look(look, rule, i)
        if last.winner is not None:
            return last
    assert last is not None
    return last


def _at_look(counts: Counts, rule: WinnerRule, look: int) -> Decision:
    if len(counts) < 2:
        raise ValueError(f"a winner needs at least two variants, got {len(counts)}")
    for name, (s, n) in counts.items():
        if n < 0 or not 0 <= s <= max(n, 0):
            raise ValueError(f"variant {name}: expected 0 <= successes <= trials, got {s} of {n}")
    trials = {k: int(n) for k, (_, n) in counts.items()}
    rates = {k: (s / n if n else 0.0) for k, (s, n) in counts.items()}
    leader = max(sorted(rates), key=lambda k: rates[k])
    pairs = len(counts) * (len(counts) - 1) // 2
    short = sorted(k for k, n in trials.items() if n < rule.min_contacts)
    if short:
        return Decision(None, leader, 1.0, None, rates, [], rule,
                        f"fewer than {rule.min_contacts} contacts in {', '.join(short)}",
                        trials)  # fmt: skip
    s_l, n_l = counts[leader]
    comparisons = []
    for other, (s, n) in sorted(counts.items()):
        if other == leader:
            continue
        p = min(1.0, pairs * msprt_p_value(s, n, s_l, n_l, rule.mixture_sd))
        comparisons.append(Comparison(leader, other, rates[leader] - rates[other], p))
    worst = max(c.p_value for c in comparisons)
    if worst <= rule.alpha:
        return Decision(leader, leader, worst, look, rates, comparisons, rule,
                        f"{leader} beats every other variant (always-valid p = {worst:.3g} "
                        f"<= {rule.alpha})", trials)  # fmt: skip
    return Decision(None, leader, worst, None, rates, comparisons, rule,
                    f"no winner yet: always-valid p = {worst:.3g} > {rule.alpha}",
                    trials)  # fmt: skip
