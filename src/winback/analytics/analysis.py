"""The whole analysis of a customer base, from transactions to one result: RFM, the purchase
and spend models with a holdout check, per-customer predictions, clusters and base health.

Pure: arrays in, :class:`Analysis` out. :mod:`winback.analytics.service` feeds it from the
store and writes the results back; ``winback analyze --orders FILE`` feeds it from a file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from winback.analytics import health
from winback.analytics._fit import FloatArray, NotEnoughData
from winback.analytics.bgnbd import BetaGeo
from winback.analytics.clusters import Clusters, cluster
from winback.analytics.clv import Predictions, PurchaseModel, predict
from winback.analytics.gamma_gamma import GammaGamma
from winback.analytics.mbgnbd import ModifiedBetaGeo
from winback.analytics.pareto_nbd import ParetoNBD
from winback.analytics.rfm import RFM, SEGMENTS, build_table, score
from winback.analytics.summary import Summary, Transactions, sort_transactions, summary_data
from winback.config import Settings
from winback.errors import WinbackError
from winback.ports import StepProgress

#: The models' time unit: weeks, as in the literature (parameters compare with the papers).
UNIT_DAYS = 7.0
EPOCH = date(1970, 1, 1)
P_ALIVE_BINS = 10
HOLDOUT_MAX_FREQUENCY = 7
#: Below this mean dropout probability per purchase (or rate per week for Pareto/NBD), a fit
#: at the boundary is the NBD.
NO_DROPOUT = 1e-3
#: The fitted parameters of the dropout process: at a bound, the fit is at the model's limit
#: (Beta a, b of BG/NBD and MBG/NBD at their cap; Pareto/NBD's mean dropout rate s/β at its
#: floor).
DROPOUT_PARAMS = ("a", "b", "s/beta")

PURCHASE_MODELS: dict[str, Any] = {
    "bgnbd": BetaGeo,
    "mbgnbd": ModifiedBetaGeo,
    "pareto-nbd": ParetoNBD,
}
MODELS = (*PURCHASE_MODELS, "gamma-gamma")

Progress = StepProgress


class UnknownModel(WinbackError):
    """A model name that is not one of bgnbd, mbgnbd, pareto-nbd, gamma-gamma."""


def to_date(day: int | float) -> date:
    return EPOCH + timedelta(days=int(day))


def day_of(d: date) -> int:
    return (d - EPOCH).days


@dataclass
class Engagement:
    """Day numbers (NaN: never) of each customer's last email open, click and site visit,
    aligned with the summary's customers."""

    last_open: FloatArray
    last_click: FloatArray
    last_visit: FloatArray


@dataclass
class Analysis:
    reference_day: int
    summary: Summary
    rfm: RFM
    model: PurchaseModel | None
    spend_model: GammaGamma | None
    predictions: Predictions | None
    clusters: Clusters
    report: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def fit_purchase_model(name: str, s: Summary) -> PurchaseModel:
    if name not in PURCHASE_MODELS:
        raise UnknownModel(
            f"unknown purchase model {name!r} (expected one of {', '.join(PURCHASE_MODELS)})"
        )
    model: PurchaseModel = PURCHASE_MODELS[name].fitted(s.frequency, s.recency, s.T)
    return model


def fit_model(tx: Transactions, model: str, calibration_end: int, today: int) -> dict[str, Any]:
    """Fit one model (``bgnbd``, ``mbgnbd``, ``pareto-nbd`` or ``gamma-gamma``) on the purchases up to
    ``calibration_end``; with purchases after it (up to ``today``), add the holdout check."""
    if model not in MODELS:
        raise UnknownModel(f"unknown model {model!r} (expected one of {', '.join(MODELS)})")
    if calibration_end > today:
        raise WinbackError(
            f"calibration end {to_date(calibration_end)} is after the last date {to_date(today)}"
        )
    s = summary_data(tx, calibration_end, observation_end=today, unit_days=UNIT_DAYS)
    result: dict[str, Any]
    if model == "gamma-gamma":
        gg = GammaGamma.fitted(s.frequency, s.monetary_value)
        assert gg.fit is not None
        result = gg.fit.as_dict()
        result["population_mean_spend"] = gg.population_mean
    else:
        m: Any = fit_purchase_model(model, s)
        result = m.fit.as_dict()
        if calibration_end < today:
            result["holdout"] = holdout_check(model, tx, calibration_end, today)
    result["calibration_end"] = to_date(calibration_end)
    result["time_unit"] = "weeks"
    return result


def holdout_check(
    model_name: str, tx: Transactions, calibration_end: int, observation_end: int
) -> dict[str, Any]:
    """Fit on purchases up to ``calibration_end`` and compare the expected purchases in the
    holdout period with the actual ones, per number of repeat purchases in calibration (the
    classic calibration / holdout plot)."""
    s = summary_data(tx, calibration_end, observation_end=observation_end, unit_days=UNIT_DAYS)
    model = fit_purchase_model(model_name, s)
    horizon = (observation_end - calibration_end) / UNIT_DAYS
    expected = model.expected_purchases(horizon, s.frequency, s.recency, s.T)
    x = np.minimum(s.frequency, HOLDOUT_MAX_FREQUENCY).astype(np.int64)
    n = np.bincount(x, minlength=HOLDOUT_MAX_FREQUENCY + 1)
    actual = np.bincount(x, weights=s.holdout_frequency, minlength=HOLDOUT_MAX_FREQUENCY + 1)
    predicted = np.bincount(x, weights=expected, minlength=HOLDOUT_MAX_FREQUENCY + 1)
    rows = [
        {
            "frequency": f"{i}+" if i == HOLDOUT_MAX_FREQUENCY else str(i),
            "customers": int(n[i]),
            "actual": float(actual[i] / n[i]) if n[i] else 0.0,
            "predicted": float(predicted[i] / n[i]) if n[i] else 0.0,
        }
        for i in range(HOLDOUT_MAX_FREQUENCY + 1)
    ]
    return {
        "calibration_end": to_date(calibration_end),
        "holdout_end": to_date(observation_end),
        "holdout_weeks": round(horizon, 2),
        "params": model.params,
        "customers": len(s),
        "actual_total": float(s.holdout_frequency.sum()),
        "predicted_total": float(expected.sum()),
        "by_frequency": rows,
    }


def analyze(
    tx: Transactions,
    reference_day: int,
    settings: Settings,
    *,
    engagement: Callable[[Summary], Engagement] | None = None,
    holdout: bool = True,
    progress: Progress | None = None,
) -> Analysis:
    """Run every analysis on ``tx`` as of ``reference_day`` (purchases after it are ignored)."""
    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    notes: list[str] = []
    say("summary")
    tx = sort_transactions(tx)  # once, so that the holdout check finds them sorted
    s = summary_data(tx, reference_day, observation_end=reference_day, unit_days=UNIT_DAYS)
    lap("summary")
    if len(s) == 0:
        raise NotEnoughData("no purchases on or before the reference date: nothing to analyse")
    recency_days = (reference_day - s.last_day).astype(np.float64)
    monetary = s.revenue if settings.rfm_monetary == "total" else s.revenue / s.orders
    say("RFM")
    rfm = score(
        recency_days, s.orders.astype(np.float64), monetary, build_table(settings.rfm_table)
    )
    lap("rfm")
    say(f"fitting {settings.analytics_model}")
    model: PurchaseModel | None = None
    spend_model: GammaGamma | None = None
    predictions: Predictions | None = None
    try:
        model = fit_purchase_model(settings.analytics_model, s)
        notes.extend(_fit_notes(settings.analytics_model, model_fit(model), settings))
    except NotEnoughData as exc:
        notes.append(str(exc))
    lap("purchase_model")
    if model is not None and not _usable(model):
        notes.append(
            f"{settings.analytics_model} has no finite estimate on this data (too few or too "
            "uniform customers): no P(alive), expected purchases or CLV"
        )
        model = None
    try:
        spend_model = GammaGamma.fitted(s.frequency, s.monetary_value)
    except NotEnoughData as exc:
        notes.append(str(exc))
    if spend_model is not None and not _usable(spend_model):
        notes.append("gamma-gamma has no finite estimate on this data: no expected spend or CLV")
        spend_model = None
    lap("spend_model")
    if model is not None:
        say("predictions")
        predictions = predict(
            model,
            spend_model,
            s.frequency,
            s.recency,
            s.T,
            s.monetary_value,
            s.last_day.astype(np.float64),
            reference_day,
            unit_days=UNIT_DAYS,
            horizon_days=settings.clv_horizon_days,
            annual_discount=settings.clv_discount_rate,
        )
    lap("predictions")
    holdout_report = None
    first = int(s.first_day.min())
    span = reference_day - first
    if holdout and model is not None and span >= 84:
        say("holdout check")
        hold_days = int(min(max(span // 3, 28), 365))
        try:
            holdout_report = holdout_check(
                settings.analytics_model, tx, reference_day - hold_days, reference_day
            )
        except NotEnoughData as exc:
            notes.append(f"holdout check skipped: {exc}")
    lap("holdout")
    eng = _engagement_as_of(engagement(s), reference_day) if engagement is not None else None
    say("clusters")
    last_touch = recency_days
    if eng is not None:
        stacked = np.column_stack([eng.last_open, eng.last_click, eng.last_visit, s.last_day])
        latest = np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=1)
        last_touch = reference_day - latest
    clusters = cluster(
        recency_days,
        s.orders.astype(np.float64),
        s.revenue / s.orders,
        (reference_day - s.first_day).astype(np.float64),
        last_touch,
        seed=settings.cluster_seed,
        max_k=settings.cluster_max_k,
    )
    lap("clusters")
    report = _report(s, rfm, model, spend_model, predictions, clusters, eng, settings)
    report["reference_date"] = to_date(reference_day)
    report["holdout"] = holdout_report
    report["notes"] = notes
    report["timings"] = timings
    return Analysis(reference_day, s, rfm, model, spend_model, predictions, clusters, report, notes)


def _fit_notes(model: str, fitted: dict[str, Any] | None, settings: Settings) -> list[str]:
    notes = []
    if fitted is not None and not fitted["converged"]:
        notes.append(f"{model} did not fully converge: see the fit report")
    note = boundary_note(model, fitted, settings.dormant_days)
    if note is not None:
        notes.append(note)
    return notes


def boundary_note(model: str, fitted: dict[str, Any] | None, dormant_days: int) -> str | None:
    """What a fit whose dropout parameters ran to a bound means for the reader, or None.

    No dropout (p → 0, the NBD limit): P(alive) is about 1 for everyone and says nothing about
    dormancy. The same dropout probability for every customer (a, b → ∞ at a fixed ratio):
    P(alive) rests on that one figure and on recency alone."""
    bound = [name for name in (fitted or {}).get("at_bound", []) if name in DROPOUT_PARAMS]
    if fitted is None or not bound:
        return None
    params = fitted["params"]
    where = f"{model} ran to the boundary of its model ({', '.join(bound)} on a bound)"
    if "a" in params and "b" in params:
        p = params["a"] / (params["a"] + params["b"])
    elif "s" in params and "beta" in params:
        p = params["s"] / params["beta"]  # mean dropout rate per week
    else:
        return None
    if p < NO_DROPOUT:
        return (
            f"{where}: the data show no dropout, so P(alive) is about 1 for everyone; dormancy "
            f"by P(alive) is not informative, read the {dormant_days}-day rule"
        )
    if "s" in params:
        return None
    return (
        f"{where}: the data show the same dropout probability ({p:.3g} per purchase) for every "
        f"customer, so P(alive) rests on that one figure and on recency; read it beside the "
        f"{dormant_days}-day rule"
    )


def _engagement_as_of(eng: Engagement, reference_day: int) -> Engagement:
    """Engagement after the reference day is not known at that day: it counts as never."""
    return Engagement(
        *(
            np.where(v > reference_day, np.nan, v)
            for v in (eng.last_open, eng.last_click, eng.last_visit)
        )
    )


def _usable(model: Any) -> bool:
    """A fit whose parameters are all finite and positive (a diverging fit is not)."""
    fit = model_fit(model)
    return fit is None or all(0 < v < float("inf") for v in fit["params"].values())


def model_fit(model: Any) -> dict[str, Any] | None:
    fit = getattr(model, "fit", None)
    return fit.as_dict() if fit is not None else None


def _report(
    s: Summary,
    rfm: RFM,
    model: PurchaseModel | None,
    spend_model: GammaGamma | None,
    predictions: Predictions | None,
    clusters: Clusters,
    eng: Engagement | None,
    settings: Settings,
) -> dict[str, Any]:
    ref = s.calibration_end
    days_since_purchase = (ref - s.last_day).astype(np.float64)
    report: dict[str, Any] = {
        "customers": len(s),
        "orders": int(s.orders.sum()),
        "revenue": round(float(s.revenue.sum()), 2),
        "repeat_customers": int((s.frequency > 0).sum()),
        "model": model_fit(model),
        "spend_model": model_fit(spend_model),
        "time_unit": "weeks",
    }
    report["rfm"] = {
        "monetary": settings.rfm_monetary,
        "table_overridden": bool(settings.rfm_table),
        "grid": health.rfm_grid(rfm.r, rfm.f, s.revenue),
        "segments": health.segment_table(rfm.segment_code, rfm.segment_names, s.revenue, SEGMENTS),
    }
    p_alive = predictions.p_alive if predictions is not None else None
    dists = {"last_purchase": health.days_since_distribution(days_since_purchase)}
    if eng is not None:
        for key, arr in (
            ("last_open", eng.last_open),
            ("last_click", eng.last_click),
            ("last_visit", eng.last_visit),
        ):
            dists[key] = health.days_since_distribution(ref - arr)
    report["health"] = {
        "dormant": health.dormant_shares(
            days_since_purchase,
            p_alive,
            dormant_days=settings.dormant_days,
            alive_threshold=settings.alive_threshold,
        ),
        "distributions": dists,
    }
    if predictions is not None:
        hist = np.histogram(np.clip(predictions.p_alive, 0, 1), bins=P_ALIVE_BINS, range=(0, 1))
        report["predictions"] = {
            "p_alive_histogram": hist[0].tolist(),
            "mean_p_alive": float(predictions.p_alive.mean()),
            "expected_purchases_90d": float(predictions.expected_purchases_90d.sum()),
            "expected_spend_mean": float(predictions.expected_spend.mean()),
            "clv_total": round(float(predictions.clv.sum()), 2),
            "clv_mean": float(predictions.clv.mean()),
            "overdue": int((predictions.days_overdue > 0).sum()),
            "clv_horizon_days": settings.clv_horizon_days,
            "clv_discount_rate": settings.clv_discount_rate,
        }
    report["clusters"] = {
        "k": clusters.k,
        "silhouette": {str(k): round(v, 4) for k, v in clusters.silhouette.items()},
        "clusters": [
            {
                "cluster": i,
                "label": clusters.names[i],
                "customers": clusters.sizes[i] if clusters.sizes else len(s),
                "centre": clusters.centres[i] if clusters.centres else {},
            }
            for i in range(clusters.k)
        ],
    }
    return report
