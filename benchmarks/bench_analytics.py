"""Analytics benchmark: winback's own BG/NBD / Gamma-Gamma against the archived `lifetimes`
0.11.3 (the reference Python users know), on CDNOW and on generated BG/NBD data of 100,000
and 1,000,000 customers; then a full `winback analyze` of 1,000,000 customers with about
10,000,000 orders in a SQLite workspace.

`lifetimes` runs in its own virtual environment (benchmarks/.venv-lifetimes, created here on
first use with `python -m venv` and pip; git-ignored) in a subprocess, with a time limit.
Both sides get the same transactions and time the same four steps: summary from
transactions, BG/NBD fit, Gamma-Gamma fit, and predictions for every customer (P(alive),
expected purchases in 90 days, expected spend).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from winback.analytics import BetaGeo, GammaGamma, summary_data
from winback.analytics.orders_file import day_number, read_orders
from winback.analytics.summary import Transactions
from winback.data import CDNOW_MASTER

HERE = Path(__file__).parent
VENV = HERE / ".venv-lifetimes"
WORK = HERE / "work"
LIFETIMES_TIMEOUT = int(os.environ.get("WINBACK_BENCH_LIFETIMES_TIMEOUT", "1500"))
UNIT = 7.0  # weeks
HORIZON = 90.0 / UNIT

LIFETIMES_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data
data = np.load(sys.argv[1])
end = pd.Timestamp(int(data["end"]), unit="D")
df = pd.DataFrame({"customer": data["customer"],
                   "date": pd.to_datetime(data["day"], unit="D"),
                   "amount": data["amount"]})
out = {"timings": {}, "cpu": {}}
def lap(name, t, c):
    out["timings"][name] = time.perf_counter() - t
    out["cpu"][name] = time.process_time() - c
t, c = time.perf_counter(), time.process_time()
s = summary_data_from_transaction_data(df, "customer", "date", monetary_value_col="amount",
                                       observation_period_end=end, freq="D", freq_multiplier=7)
lap("summary", t, c)
t, c = time.perf_counter(), time.process_time()
bg = BetaGeoFitter().fit(s["frequency"], s["recency"], s["T"])
lap("bgnbd_fit", t, c)
rep = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
t, c = time.perf_counter(), time.process_time()
gg = GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"])
lap("gamma_gamma_fit", t, c)
t, c = time.perf_counter(), time.process_time()
alive = bg.conditional_probability_alive(s["frequency"], s["recency"], s["T"])
exp90 = bg.conditional_expected_number_of_purchases_up_to_time(HORIZON, s["frequency"], s["recency"], s["T"])
spend = gg.conditional_expected_average_profit(s["frequency"], s["monetary_value"])
lap("predictions", t, c)
out["bgnbd"] = {k: float(v) for k, v in bg.params_.items()}
out["gamma_gamma"] = {k: float(v) for k, v in gg.params_.items()}
out["customers"] = int(len(s))
np.savez(sys.argv[2], customer=s.index.values.astype(np.int64), alive=np.asarray(alive, float),
         exp90=np.asarray(exp90, float), spend=np.asarray(spend, float))
print(json.dumps(out))
""".replace("HORIZON", repr(HORIZON))


# -- the reference environment -------------------------------------------------------------
def lifetimes_python() -> Path | None:
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import lifetimes, pandas"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print("creating benchmarks/.venv-lifetimes (lifetimes 0.11.3, pandas<3) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "lifetimes==0.11.3", "pandas<3"]
    if subprocess.run(pip).returncode != 0:
        return None
    return python if subprocess.run(check, capture_output=True).returncode == 0 else None


# -- data ----------------------------------------------------------------------------------
def generate(n: int, seed: int = 42) -> tuple[Transactions, int]:
    """Synthetic BG/NBD customers: first purchases spread over a year, observed for two;
    λ ~ Gamma(r, α) per day, dropout p ~ Beta(a, b) after each purchase, spend by
    Gamma-Gamma. About 10 orders per customer."""
    rng = np.random.default_rng(seed)
    start = day_number(date(2023, 1, 1))
    end = start + 730
    birth = start + rng.integers(0, 365, n)
    horizon = (end - birth).astype(np.float64)
    lam = rng.gamma(1.2, 1 / 27.0, n)  # r = 1.2, α = 27 days
    p = rng.beta(2.0, 20.0, n)
    max_repeats = rng.geometric(p) - 1
    poisson = rng.poisson(lam * horizon)
    k = np.minimum(poisson, max_repeats)
    # Repeat times: the first k of `poisson` uniform points on (0, horizon], per customer.
    owner = np.repeat(np.arange(n), poisson)
    u = rng.random(len(owner))
    order = np.argsort(owner + u)  # owner is sorted already: sort u within each owner
    owner, u = owner[order], u[order]
    starts = np.cumsum(poisson) - poisson
    rank = np.arange(len(owner)) - starts[owner]
    keep = rank < k[owner]
    owner, u = owner[keep], u[keep]
    rep_day = birth[owner] + np.floor(u * horizon[owner]).astype(np.int64)
    customer = np.concatenate([np.arange(n), owner])
    day = np.concatenate([birth, rep_day])
    nu = rng.gamma(4.0, 1 / 20.0, n)  # q = 4, γ = 20
    amount = np.round(rng.gamma(6.0, 1.0, len(customer)) / nu[customer], 2)
    return Transactions(customer, day.astype(np.int64), amount), int(end)


def cdnow() -> tuple[Transactions, int]:
    f = read_orders(CDNOW_MASTER)
    return f.transactions, day_number(date(1997, 9, 30))


# -- the two sides -------------------------------------------------------------------------
def ours(tx: Transactions, end: int) -> dict[str, Any]:
    t: dict[str, float] = {}
    cpu: dict[str, float] = {}
    mark = [time.perf_counter(), time.process_time()]

    def lap(name: str) -> None:
        t[name] = time.perf_counter() - mark[0]
        cpu[name] = time.process_time() - mark[1]
        mark[:] = [time.perf_counter(), time.process_time()]

    s = summary_data(tx, end, observation_end=end, unit_days=UNIT)
    lap("summary")
    bg = BetaGeo.fitted(s.frequency, s.recency, s.T)
    lap("bgnbd_fit")
    gg = GammaGamma.fitted(s.frequency, s.monetary_value)
    lap("gamma_gamma_fit")
    alive = bg.probability_alive(s.frequency, s.recency, s.T)
    exp90 = bg.expected_purchases(HORIZON, s.frequency, s.recency, s.T)
    spend = gg.expected_spend(s.frequency, s.monetary_value)
    lap("predictions")
    assert bg.fit is not None and gg.fit is not None
    return {
        "timings": t,
        "cpu": cpu,
        "bgnbd": bg.params,
        "gamma_gamma": {"p": gg.p, "q": gg.q, "v": gg.gamma},
        "converged": bg.fit.converged and gg.fit.converged,
        "customers": len(s),
        "_arrays": {"customer": s.customer, "alive": alive, "exp90": exp90, "spend": spend},
    }


def theirs(python: Path, tx: Transactions, end: int, timeout: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(data, customer=tx.customer, day=tx.day, amount=tx.amount, end=end)
        script = Path(tmp) / "run.py"
        script.write_text(LIFETIMES_SCRIPT)
        try:
            proc = subprocess.run(
                [str(python), str(script), str(data), str(out)],
                capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        arrays = np.load(out)
        result["_arrays"] = {k: arrays[k] for k in arrays.files}
        return result


def compare(name: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"data": name, "customers": a["customers"], "ours": _clean(a)}
    if "error" in b:
        row["lifetimes"] = b
        print(f"  lifetimes: {b['error']}", flush=True)
        return row
    row["lifetimes"] = _clean(b)
    rel: dict[str, float] = {}
    for model in ("bgnbd", "gamma_gamma"):
        for k, v in a[model].items():
            ref = b[model][k]
            rel[f"{model}.{k}"] = abs(v - ref) / abs(ref)
    pa, pb = a["_arrays"], b["_arrays"]
    same = np.array_equal(pa["customer"], pb["customer"])
    if same:
        for k in ("alive", "exp90", "spend"):
            denom = np.maximum(np.abs(pb[k]), 1e-12)
            rel[f"pred.{k}.max"] = float(np.max(np.abs(pa[k] - pb[k]) / denom))
    row["relative_difference"] = rel
    row["max_param_relative_difference"] = max(v for k, v in rel.items() if "pred" not in k)
    for kind in ("timings", "cpu"):
        speed = {k: b[kind][k] / max(a[kind][k], 1e-9) for k in a[kind]}
        speed["end_to_end"] = sum(b[kind].values()) / sum(a[kind].values())
        row["speedup" if kind == "timings" else "speedup_cpu"] = speed
        label = "wall" if kind == "timings" else "CPU"
        print(
            f"  {label}: ours {sum(a[kind].values()):.2f} s, lifetimes "
            f"{sum(b[kind].values()):.2f} s -> {speed['end_to_end']:.1f}x",
            flush=True,
        )
        for k in a[kind]:
            print(f"    {k:16} ours {a[kind][k]:8.3f} s  lifetimes {b[kind][k]:8.3f} s"
                  f"  {speed[k]:7.1f}x", flush=True)  # fmt: skip
    print(f"  max parameter rel. diff {row['max_param_relative_difference']:.1e}", flush=True)
    return row


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if not k.startswith("_")}
    for kind in ("timings", "cpu"):
        out[kind] = {k: round(v, 4) for k, v in d.get(kind, {}).items()}
    return out


# -- winback analyze on a workspace --------------------------------------------------------
def workspace_analyze(n: int, folder: Path) -> dict[str, Any]:
    import sqlite3

    import winback
    from winback.clock import FixedClock

    tx, end = generate(n, seed=7)
    if folder.exists():
        shutil.rmtree(folder)
    ws = winback.init(folder, environ={})
    ws.close()
    c = time.perf_counter()
    db = sqlite3.connect(folder / "winback.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now = "2025-01-01 00:00:00.000000"
    db.executemany(
        "INSERT INTO contacts (id, customer_id, attributes, orders_count, revenue_total, "
        "created_at, updated_at) VALUES (?, ?, '{}', 0, 0, ?, ?)",
        ((i + 1, f"c{i}", now, now) for i in range(n)),
    )
    chunk = 1_000_000
    for lo in range(0, len(tx), chunk):
        hi = min(lo + chunk, len(tx))
        days = np.datetime_as_string(tx.day[lo:hi].astype("datetime64[D]"))
        stamps = np.char.add(days, " 12:00:00.000000").tolist()
        db.executemany(
            "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency) "
            "VALUES (?, ?, ?, ?, 'USD')",
            zip(
                (f"o{i}" for i in range(lo, hi)),
                (tx.customer[lo:hi] + 1).tolist(),
                stamps,
                tx.amount[lo:hi].tolist(),
                strict=True,
            ),
        )
    db.commit()
    db.close()
    load = time.perf_counter() - c
    print(f"  loaded {n:,} contacts and {len(tx):,} orders in {load:.0f} s (setup, not timed)",
          flush=True)  # fmt: skip
    ws = winback.open(folder, clock=FixedClock(datetime.combine(
        date(1970, 1, 1), datetime.min.time(), UTC) + __import__("datetime").timedelta(days=end)),
        environ={})  # fmt: skip
    steps: dict[str, float] = {}  # wall seconds per step of the analysis
    last = [time.perf_counter()]
    current = ["open"]

    def progress(step: str) -> None:
        now_t = time.perf_counter()
        steps[current[0]] = round(now_t - last[0], 2)
        current[0], last[0] = step, now_t

    c, cpu0 = time.perf_counter(), time.process_time()
    result = ws.analytics.analyze(progress=progress)
    total, cpu = time.perf_counter() - c, time.process_time() - cpu0
    steps[current[0]] = round(time.perf_counter() - last[0], 2)
    ws.close()
    print(f"    wall seconds per step: {steps}", flush=True)
    print(f"  winback analyze: {total:.1f} s wall, {cpu:.1f} s CPU for {n:,} customers / "
          f"{len(tx):,} orders", flush=True)  # fmt: skip
    print(f"    steps: {result.report['timings']}", flush=True)
    return {
        "customers": n,
        "orders": len(tx),
        "seconds": round(total, 2),
        "cpu_seconds": round(cpu, 2),
        "target_seconds": 60,
        "analysis_timings": result.report["timings"],
        "progress_steps": steps,
        "clusters": result.report["clusters"]["k"],
        "model_converged": result.report["model"]["converged"],
    }


def run(quick: bool) -> dict[str, Any]:
    python = lifetimes_python()
    sizes = [10_000] if quick else [100_000, 1_000_000]
    figures: dict[str, Any] = {"comparisons": []}
    datasets = [("CDNOW (23,570 customers)", cdnow)] + [
        (f"generated {n:,} customers", lambda n=n: generate(n)) for n in sizes
    ]
    for name, make in datasets:
        tx, end = make()
        print(f"{name}: {len(tx):,} transactions", flush=True)
        a = ours(tx, end)
        b = theirs(python, tx, end, LIFETIMES_TIMEOUT) if python else {"error": "no lifetimes"}
        figures["comparisons"].append(compare(name, a, b))
    ws_n = 20_000 if quick else 1_000_000
    print(f"winback analyze on a SQLite workspace of {ws_n:,} customers", flush=True)
    WORK.mkdir(exist_ok=True)
    figures["workspace_analyze"] = workspace_analyze(ws_n, WORK / "analyze-ws")
    shutil.rmtree(WORK / "analyze-ws", ignore_errors=True)
    return figures
