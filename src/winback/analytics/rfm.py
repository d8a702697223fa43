"""RFM analysis: recency, frequency and monetary value scored 1-5, and the 11 segments.

- **Recency**: days from the last purchase to the reference date (lower is better, so the
  most recent customers get R = 5).
- **Frequency**: number of orders.
- **Monetary**: total revenue, or the average order value (setting ``rfm_monetary``).

Scores are quantiles computed so that ties never split: every distinct value is one block,
and blocks are grouped greedily into five bins of as equal size as the data allows. When most
customers bought once, they all get F = 1 and the repeat buyers are spread over F = 2..5
(plain quantile cuts would put them into one middle score and leave other scores empty).

Segments come from a table that gives each of the 125 (R, F, M) cells exactly one segment
(:data:`DEFAULT_TABLE`, printed in ``docs/analytics.md``). The table is built from rules on
R and on F + M, the first matching rule winning, so it has neither gaps nor overlaps; the
setting ``rfm_table`` overrides cells (``"5*1" = "New Customers"``, ``*`` matching any score).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product

import numpy as np
from numpy.typing import NDArray

SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential Loyalist",
    "New Customers",
    "Promising",
    "Need Attention",
    "About To Sleep",
    "At Risk",
    "Can't Lose Them",
    "Hibernating",
    "Lost",
)

#: What each segment means, in words (shown in the report and the docs).
DESCRIPTIONS = {
    "Champions": "Bought recently, buy often and spend the most.",
    "Loyal": "Buy often and spend well; fairly recent.",
    "Potential Loyalist": "Recent customers with average frequency and spend.",
    "New Customers": "Bought very recently, for the first time.",
    "Promising": "Recent buyers who have not bought much yet.",
    "Need Attention": "Middling recency, frequency and spend.",
    "About To Sleep": "Below-average recency and frequency: slipping away.",
    "At Risk": "Bought often and spent well, but a long time ago.",
    "Can't Lose Them": "Were among the best customers, and have not come back for long.",
    "Hibernating": "Last purchase long ago, few orders, low spend.",
    "Lost": "Lowest recency, frequency and spend.",
}


def _rule(r: int, f: int, m: int) -> str:
    """The default segment of a cell: first matching rule on R and FM = F + M (2..10)."""
    fm = f + m
    if r == 5 and f == 1:
        return "New Customers"
    if (r == 5 and fm >= 8) or (r == 4 and fm >= 9):
        return "Champions"
    if r >= 3 and fm >= 7:
        return "Loyal"
    if r >= 4 and fm >= 5:
        return "Potential Loyalist"
    if r >= 4:
        return "Promising"
    if r == 3 and fm >= 5:
        return "Need Attention"
    if r == 3:
        return "About To Sleep"
    if (r == 1 and fm >= 8) or (r == 2 and fm >= 9):
        return "Can't Lose Them"
    if fm >= 6:
        return "At Risk"
    if r == 2:
        return "Hibernating"
    return "Lost"


#: (R, F, M) -> segment for all 125 cells.
DEFAULT_TABLE: dict[tuple[int, int, int], str] = {
    (r, f, m): _rule(r, f, m) for r, f, m in product(range(1, 6), repeat=3)
}


class RFMTableError(ValueError):
    pass


def build_table(overrides: Mapping[str, str] | None = None) -> dict[tuple[int, int, int], str]:
    """The default table with ``overrides`` applied in order. Keys are three characters, each
    a score 1-5 or ``*`` (any), in R, F, M order; values are segment names."""
    table = dict(DEFAULT_TABLE)
    for key, segment in (overrides or {}).items():
        code = key.strip()
        if len(code) != 3 or any(ch not in "12345*" for ch in code):
            raise RFMTableError(
                f"rfm_table key {key!r}: expected three characters, each 1-5 or * "
                "(R, F, M), e.g. '555' or '5*1'"
            )
        if not segment or len(segment) > 32:
            raise RFMTableError(f"rfm_table[{key!r}] = {segment!r}: expected a name of 1-32 chars")
        for cell in table:
            if all(ch == "*" or int(ch) == v for ch, v in zip(code, cell, strict=True)):
                table[cell] = segment
    return table


def table_markdown(table: Mapping[tuple[int, int, int], str] | None = None) -> str:
    """The 125 cells as a Markdown table: one row per (R, F), one column per M."""
    table = table or DEFAULT_TABLE
    lines = [
        "| R | F | M=1 | M=2 | M=3 | M=4 | M=5 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in range(5, 0, -1):
        for f in range(5, 0, -1):
            cells = " | ".join(table[(r, f, m)] for m in range(1, 6))
            lines.append(f"| {r} | {f} | {cells} |")
    return "\n".join(lines) + "\n"


def quantile_scores(
    values: NDArray[np.float64], *, higher_is_better: bool = True
) -> NDArray[np.int64]:
    """Scores 1..5 by tie-aware quantiles (see the module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    uniq, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    d = len(uniq)
    if d == 1:
        out[:] = 3
        return out
    if d <= 5:
        block_score = 1 + np.round(np.arange(d) * 4 / (d - 1)).astype(np.int64)
    else:
        block_score = _greedy_bins(counts, 5)
    scores = block_score[inverse]
    return scores if higher_is_better else 6 - scores


def _greedy_bins(counts: NDArray[np.int64], bins: int) -> NDArray[np.int64]:
    """Group consecutive blocks into ``bins`` bins of near-equal size (ties never split)."""
    d = len(counts)
    out = np.empty(d, dtype=np.int64)
    remaining = int(counts.sum())
    b, size, j = 1, 0, 0
    target = remaining / bins
    while j < d:
        c = int(counts[j])
        blocks_left = d - j
        bins_left = bins - b + 1
        close_before = (
            size > 0
            and b < bins
            and (size + c - target > target - size or blocks_left <= bins_left - 1)
        )
        if close_before:
            remaining -= size
            b += 1
            size = 0
            target = remaining / (bins - b + 1)
            continue
        out[j] = b
        size += c
        j += 1
        if b < bins and size >= target and d - j >= bins - b:
            remaining -= size
            b += 1
            size = 0
            target = remaining / (bins - b + 1)
    return out


@dataclass(frozen=True)
class RFM:
    recency_days: NDArray[np.float64]
    frequency: NDArray[np.float64]
    monetary: NDArray[np.float64]
    r: NDArray[np.int64]
    f: NDArray[np.int64]
    m: NDArray[np.int64]
    segment: NDArray[np.object_]  # names
    segment_code: NDArray[np.int64]  # index into segment_names
    segment_names: list[str]


def score(
    recency_days: NDArray[np.float64],
    frequency: NDArray[np.float64],
    monetary: NDArray[np.float64],
    table: Mapping[tuple[int, int, int], str] | None = None,
) -> RFM:
    """Score customers and assign their segments (vectorised lookup into the 125 cells)."""
    table = table or DEFAULT_TABLE
    r = quantile_scores(recency_days, higher_is_better=False)
    f = quantile_scores(frequency)
    m = quantile_scores(monetary)
    names = np.array(sorted(set(table.values())), dtype=object)
    index = {name: i for i, name in enumerate(names)}
    lookup = np.zeros((6, 6, 6), dtype=np.int64)
    for (cr, cf, cm), name in table.items():
        lookup[cr, cf, cm] = index[name]
    codes = lookup[r, f, m] if len(r) else np.zeros(0, dtype=np.int64)
    segment = names[codes]
    return RFM(
        np.asarray(recency_days, dtype=np.float64),
        np.asarray(frequency, dtype=np.float64),
        np.asarray(monetary, dtype=np.float64),
        r,
        f,
        m,
        segment,
        codes,
        [str(n) for n in names],
    )
