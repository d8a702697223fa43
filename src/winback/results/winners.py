"""Winner routing: a ``split`` step with ``winner: auto`` sends its new entrants to the
branch the winner rule (:func:`winback.analytics.sequential.decide`, settings
``winner_alpha``, ``winner_mixture_sd``, ``winner_min_contacts``) has declared, once it
has; until then entrants draw a branch by weight as usual. The rule is applied at every
day's look since the split's first entry, as ``winback flows results`` does, so the
routing and the results agree, and a declared winner stands."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from winback.analytics.sequential import WinnerRule
from winback.config import Settings
from winback.results.attribution import Scope, arm_days, split_arms
from winback.results.report import experiment


def auto_splits(program: Any) -> dict[str, list[str]]:
    """The ``split`` steps of ``program`` with ``winner: auto``, with their branch names."""
    return {
        n.id: [name for name, _, _ in n.branches]
        for n in program.ordered()
        if n.kind == "split" and n.step.split.winner == "auto"
    }


def declared_winners(
    engine: Engine, settings: Settings, program: Any, flow_id: int, now: datetime
) -> dict[str, str]:
    """Per ``winner: auto`` split step of the flow: the declared winner (steps without one
    are left out)."""
    splits = auto_splits(program)
    if not splits:
        return {}
    scope = Scope(
        flow_id=flow_id,
        flow_key=program.key,
        as_of=now,
        attribution_days=settings.attribution_window_days,
        conversion_days=settings.conversion_window_days,
    )
    rule = WinnerRule.from_settings(settings)
    with engine.connect() as conn:
        arms = split_arms(conn.dialect.name, scope, splits)
        days = arm_days(conn, arms) if arms is not None else {}
    out = {}
    for sid, names in splits.items():
        winner = experiment(sid, sid, "split", names, days, rule)["winner"]
        if winner is not None:
            out[sid] = str(winner)
    return out
