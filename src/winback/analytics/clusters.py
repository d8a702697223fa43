"""Clusters of similar behaviour: K-Means on standardised behavioural features.

Features (logs tame the long tails): log recency (days since last purchase), log frequency
(orders), log monetary (average order value), log tenure (days since first purchase) and log
days since the last engagement (email open or click, site visit; the purchase if none).

The number of clusters k (2 .. ``max_k``) maximises the silhouette score on a random sample;
the model is fitted on a sample and assigns every customer, so a million customers take
seconds. Everything is seeded: the same data and seed give the same clusters and labels.
Each cluster is described in words from its centre compared with the whole base, e.g.
"frequent big spenders, recent" or "one-time buyers, gone quiet".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from winback.analytics._fit import FloatArray

FEATURES = ("recency", "frequency", "monetary", "tenure", "engagement")
FIT_SAMPLE = 8_000
SILHOUETTE_SAMPLE = 2_500


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # cluster number per customer (0-based, largest cluster first)
    names: list[str]  # description of each cluster
    k: int
    silhouette: dict[int, float]
    centres: list[dict[str, float]] = field(default_factory=list)  # medians in raw units
    sizes: list[int] = field(default_factory=list)


def cluster(
    recency_days: FloatArray,
    frequency: FloatArray,
    monetary: FloatArray,
    tenure_days: FloatArray,
    engagement_days: FloatArray,
    *,
    seed: int = 0,
    max_k: int = 8,
) -> Clusters:
    raw = np.column_stack([recency_days, frequency, monetary, tenure_days, engagement_days]).astype(
        np.float64
    )
    raw = np.where(np.isfinite(raw), raw, np.nan)
    col_fill = np.nanmax(np.where(np.isnan(raw), -np.inf, raw), axis=0)
    raw = np.where(np.isnan(raw), np.maximum(col_fill, 0), raw)
    n = len(raw)
    if n < 3:
        return Clusters(np.zeros(n, dtype=np.int64), ["everyone"], 1, {})
    feats = np.log1p(np.maximum(raw, 0))
    mean, std = feats.mean(axis=0), feats.std(axis=0)
    std[std == 0] = 1.0
    z = (feats - mean) / std
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small problems: threads only add contention
        return _cluster(raw, z, seed, max_k)


def _cluster(raw: np.ndarray, z: np.ndarray, seed: int, max_k: int) -> Clusters:
    from sklearn.cluster import KMeans  # heavy import, only when clustering
    from sklearn.metrics import silhouette_score

    n = len(raw)
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=min(n, FIT_SAMPLE), replace=False))
    sil_idx = np.sort(
        rng.choice(len(fit_idx), size=min(len(fit_idx), SILHOUETTE_SAMPLE), replace=False)
    )
    sample = z[fit_idx]
    distinct = len(np.unique(sample, axis=0))
    scores: dict[int, float] = {}
    models: dict[int, Any] = {}
    for k in range(2, min(max_k, distinct - 1) + 1):
        km = KMeans(n_clusters=k, n_init=2, max_iter=100, tol=1e-3, random_state=seed).fit(sample)
        labels = km.labels_[sil_idx]
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(sample[sil_idx], labels, random_state=seed))
        models[k] = km
    if not scores:
        return Clusters(np.zeros(n, dtype=np.int64), ["everyone"], 1, {})
    best = max(scores, key=lambda k: (round(scores[k], 6), -k))
    labels = models[best].predict(z)
    # Renumber by size (largest first) so numbers are stable and meaningful.
    sizes = np.bincount(labels, minlength=best)
    order = np.argsort(-sizes, kind="stable")
    renumber = np.empty(best, dtype=np.int64)
    renumber[order] = np.arange(best)
    labels = renumber[labels]
    overall = np.median(raw, axis=0)
    centres, names = [], []
    for c in range(best):
        med = np.median(raw[labels == c], axis=0)
        centres.append({f: float(v) for f, v in zip(FEATURES, med, strict=True)})
        names.append(describe(med, overall, z[labels == c].mean(axis=0)))
    names = _unique(names)
    return Clusters(labels, names, best, scores, centres, [int(s) for s in sizes[order]])


def describe(median: np.ndarray, overall: np.ndarray, zc: np.ndarray) -> str:
    """Words for a cluster centre (medians in raw units, ``zc`` the standardised centre)."""
    recency, frequency, _monetary, _tenure, _engagement = median
    z_rec, z_freq, z_mon, _, z_eng = zc
    if frequency <= 1:
        who = "one-time buyers"
    elif z_freq > 0.5:
        who = "frequent buyers"
    else:
        who = "occasional buyers"
    spend = ""
    if z_mon > 0.5:
        spend = "big spenders"
    elif z_mon < -0.5:
        spend = "small baskets"
    if z_rec < -0.5:
        when = "recent"
    elif z_rec > 0.5:
        when = "gone quiet"
    else:
        when = "cooling down"
    if recency > 365:
        when = "lapsed over a year"
    engaged = ", still engaged" if z_eng < -0.5 and z_rec >= 0 else ""
    head = f"{who} ({spend})" if spend else who
    return f"{head}, {when}{engaged}"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out
