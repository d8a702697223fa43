"""Base health: how much of the customer base is dormant, and how long ago customers last
opened, clicked, visited and bought.

Two definitions of dormant, side by side:

- the **fixed rule** of the seed: no purchase in the last ``dormant_days`` (90) days;
- the **cadence / P(alive) rule**: the purchase model gives P(alive) below the threshold
  (default 0.5): a weekly buyer silent for a month is dormant, a yearly buyer silent for
  four months is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from winback.analytics._fit import FloatArray

#: Buckets of "days since" used by the distributions (upper bounds, inclusive).
BUCKETS = ((7, "0-7 days"), (30, "8-30 days"), (90, "31-90 days"), (180, "91-180 days"),
           (365, "181-365 days"), (None, "over a year"))  # fmt: skip


def days_since_distribution(days: FloatArray) -> list[dict[str, Any]]:
    """Counts per bucket of days since an event; NaN counts as "never"."""
    d = np.asarray(days, dtype=np.float64)
    never = np.isnan(d)
    out = []
    lower = -np.inf
    for upper, label in BUCKETS:
        hi = np.inf if upper is None else upper
        out.append({"bucket": label, "count": int(np.sum(~never & (d > lower) & (d <= hi)))})
        lower = hi
    out.append({"bucket": "never", "count": int(never.sum())})
    return out


def dormant_shares(
    days_since_purchase: FloatArray,
    p_alive: FloatArray | None,
    *,
    dormant_days: int,
    alive_threshold: float,
) -> dict[str, Any]:
    """Share of customers dormant under each rule, and how the two rules overlap."""
    d = np.asarray(days_since_purchase, dtype=np.float64)
    n = len(d)
    fixed = d > dormant_days
    result: dict[str, Any] = {
        "customers": n,
        "fixed_rule": {"days": dormant_days, "dormant": int(fixed.sum()), "share": _share(fixed)},
    }
    if p_alive is not None:
        model = np.asarray(p_alive) < alive_threshold
        result["alive_rule"] = {
            "threshold": alive_threshold,
            "dormant": int(model.sum()),
            "share": _share(model),
        }
        result["both"] = int(np.sum(fixed & model))
        result["fixed_only"] = int(np.sum(fixed & ~model))
        result["alive_rule_only"] = int(np.sum(~fixed & model))
    return result


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def rfm_grid(r: np.ndarray, f: np.ndarray, revenue: FloatArray) -> dict[str, Any]:
    """Counts and revenue per (R, F) cell, as 5x5 lists indexed [R-1][F-1]."""
    idx = (np.asarray(r) - 1) * 5 + (np.asarray(f) - 1)
    counts = np.bincount(idx, minlength=25).reshape(5, 5)
    money = np.bincount(idx, weights=revenue, minlength=25).reshape(5, 5)
    return {"counts": counts.tolist(), "revenue": np.round(money, 2).tolist()}


def segment_table(
    codes: np.ndarray, names: Sequence[str], revenue: FloatArray, order: Sequence[str]
) -> list[dict[str, Any]]:
    """Customers and revenue per segment (``codes`` index ``names``), in ``order``, then any
    custom names; segments without customers are listed with zeros."""
    counts = np.bincount(codes, minlength=len(names))
    money = np.bincount(codes, weights=revenue, minlength=len(names))
    total_n, total_rev = max(int(counts.sum()), 1), float(money.sum()) or 1.0
    rows = {
        str(name): {
            "segment": str(name),
            "customers": int(c),
            "share": float(c) / total_n,
            "revenue": round(float(m), 2),
            "revenue_share": float(m) / total_rev,
        }
        for name, c, m in zip(names, counts, money, strict=True)
    }
    ordered = [rows.pop(n) for n in order if n in rows]
    return ordered + [rows[k] for k in sorted(rows)]
