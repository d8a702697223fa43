"""1,000,000 contacts enter the reference flow at once and are driven through every step in
simulated time, against the raw SQL lower bound (the same set updates written by hand).

- ours: ``ws.flows.tick(now)`` at day 0, 4 and 7 (enrolment from segment entry, email 1, the
  4-day wait, the membership + consent check, email 2 or exit, the 3-day wait, the second
  check, tag or exit), each followed by a sink that only counts (one set-based UPDATE marks
  the due outbox rows sent and counts them). The segment refresh is not part of this
  benchmark (``bench_segments`` measures it): membership is changed by hand between the days
  (20% of the contacts leave the segment before day 4, another 10% before day 7).
- raw lower bound: the same statements written by hand in SQL, one transaction per day, on
  a copy of the same starting database, no batching: the same state changes, outbox rows,
  tags, path tokens appended to each entry and outcome counters as ours records. Like ours,
  day 0 inserts the entries already past the first send (at the step after the 4-day
  wait, with its path token), then their messages.

Both databases: SQLite (file) and PostgreSQL (a throwaway cluster on a loopback port).
Sizes: 1,000,000 contacts (``--quick``: 20,000).

Each run also reports the longest write transaction of ours' ticks (``BEGIN`` to ``COMMIT``,
seen through the engine's events; the counting sink is not in it): ticks commit in slices of
about ``write_slice_ms``, so that other writers get the store in between.

Workers (PostgreSQL): the same week on the same data, once with one worker and once with two
(each its own workspace and engine on the same store, ticking the same instants in threads),
wall time and ratio; and each worker's share of the contact-steps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TAG = "customer_not-active_after-reactivation"


def _seed(conn: Any, n: int, postgres: bool) -> None:
    """n contacts with email consent, all in the segment Customers Not Active."""
    at = datetime(2025, 1, 1, tzinfo=UTC)
    ts = {"ts": at if postgres else at.strftime("%Y-%m-%d %H:%M:%S.%f")}
    if postgres:
        conn.execute(
            text(
                "INSERT INTO contacts (customer_id, email, attributes, orders_count, "
                "revenue_total, email_consent, created_at, updated_at) "
                "SELECT 'c' || x, 'c' || x || '@x.test', '{}', 1, 20, true, :ts, :ts "
                "FROM generate_series(1, :n) AS x"
            ),
            {"n": n, **ts},
        )
    else:
        conn.execute(
            text(
                "WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < :n) "
                "INSERT INTO contacts (customer_id, email, attributes, orders_count, "
                "revenue_total, email_consent, created_at, updated_at) "
                "SELECT 'c' || x, 'c' || x || '@x.test', '{}', 1, 20, 1, :ts, :ts FROM seq"
            ),
            {"n": n, **ts},
        )
    conn.execute(
        text(
            "INSERT INTO segments (name, definition, updated_at) "
            "VALUES ('Customers Not Active', '{}', :ts)"
        ),
        ts,
    )
    conn.execute(
        text(
            "INSERT INTO segment_membership (segment_id, contact_id, entered_at) "
            "SELECT s.id, c.id, :ts FROM contacts c, segments s"
        ),
        ts,
    )
    conn.execute(text("ANALYZE"))


def _leave(conn: Any, mod: int, rem: int, at: datetime, postgres: bool) -> None:
    """Contacts with ``id % mod == rem`` leave the segment (they became active)."""
    stamp = at if postgres else at.strftime("%Y-%m-%d %H:%M:%S.%f")
    conn.execute(
        text(
            "UPDATE segment_membership SET exited_at = :at "
            "WHERE exited_at IS NULL AND contact_id % :mod = :rem"
        ),
        {"at": stamp, "mod": mod, "rem": rem},
    )


def _count_sink(conn: Any, at: datetime, postgres: bool) -> int:
    stamp = at if postgres else at.strftime("%Y-%m-%d %H:%M:%S.%f")
    result = conn.execute(
        text(
            "UPDATE outbox SET status = 'sent', sent_at = :at "
            "WHERE status = 'pending' AND not_before <= :at"
        ),
        {"at": stamp},
    )
    return int(result.rowcount)


class WriteTimer:
    """The longest write transaction on an engine (``BEGIN`` to ``COMMIT``) while
    ``active``, from its events."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.engine, self.longest, self.count, self.active = engine, 0.0, 0, False
        self._events = event
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _begin(self, conn: Any) -> None:
        if self.active:
            conn.info["bench_began"] = time.perf_counter()

    def _rollback(self, conn: Any) -> None:
        conn.info.pop("bench_began", None)

    def _commit(self, conn: Any) -> None:
        began = conn.info.pop("bench_began", None)
        if began is not None and self.active:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - began)

    def close(self) -> None:
        self._events.remove(self.engine, "begin", self._begin)
        self._events.remove(self.engine, "commit", self._commit)
        self._events.remove(self.engine, "rollback", self._rollback)


def run_ours(ws: Any) -> dict[str, Any]:
    return run_workers([ws])


def run_workers(workers: list[Any]) -> dict[str, Any]:
    """The week with every workspace of ``workers`` ticking the same instants at once."""
    ws = workers[0]
    postgres = ws.engine.dialect.name == "postgresql"
    ws.flows.add("reactivation", now=T0 - DAY)
    ws.flows.pause("reactivation-companion")
    timers = [WriteTimer(w.engine) for w in workers]
    timings: dict[str, float] = {}
    steps = sent = 0
    shares = [0] * len(workers)
    try:
        for day in (0, 4, 7):
            if day == 4:
                with ws.engine.begin() as conn:
                    _leave(conn, 5, 0, T0 + 2 * DAY, postgres)
            if day == 7:
                with ws.engine.begin() as conn:
                    _leave(conn, 10, 1, T0 + 5 * DAY, postgres)
            now = T0 + day * DAY
            started = time.perf_counter()
            for timer in timers:
                timer.active = True
            reports = _tick_all(workers, now)
            for timer in timers:
                timer.active = False
            with ws.engine.begin() as conn:
                sent += _count_sink(conn, now, postgres)
            timings[f"day{day}"] = time.perf_counter() - started
            for i, report in enumerate(reports):
                steps += report.contact_steps
                shares[i] += report.contact_steps
    finally:
        for timer in timers:
            timer.close()
    return {
        "seconds": sum(timings.values()),
        "per_day": timings,
        "contact_steps": steps,
        "sent": sent,
        "longest_write_ms": round(max(t.longest for t in timers) * 1000),
        "write_transactions": sum(t.count for t in timers),
        **({"steps_per_worker": shares} if len(workers) > 1 else {}),
    }


def _tick_all(workers: list[Any], now: datetime) -> list[Any]:
    if len(workers) == 1:
        return [workers[0].flows.tick(now, refresh=False)]
    reports: list[Any] = [None] * len(workers)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            reports[i] = workers[i].flows.tick(now, refresh=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return reports


#: Day 4: leave unless still in the segment with consent; day 7: unless still in the segment.
# ``path = coalesce(path || ' > ', '') || :tokens``: the path tokens ours records per entry.
EXIT_DAY4 = (
    "UPDATE flow_entries SET status = 'exited', exit_reason = 'reactivated', "
    "exited_at = :now, wake_at = NULL, path = coalesce(path || ' > ', '') || :tokens "
    "WHERE step = :step AND status = 'active' "
    "AND wake_at <= :now AND NOT (EXISTS (SELECT 1 FROM segment_membership sm "
    "WHERE sm.contact_id = flow_entries.contact_id AND sm.exited_at IS NULL) "
    "AND EXISTS (SELECT 1 FROM contacts c WHERE c.id = flow_entries.contact_id "
    "AND c.email_consent))"
)
EXIT_DAY7 = (
    "UPDATE flow_entries SET status = 'exited', exit_reason = 'reactivated', "
    "exited_at = :now, wake_at = NULL, path = coalesce(path || ' > ', '') || :tokens "
    "WHERE step = :step AND status = 'active' "
    "AND wake_at <= :now AND NOT (EXISTS (SELECT 1 FROM segment_membership sm "
    "WHERE sm.contact_id = flow_entries.contact_id AND sm.exited_at IS NULL))"
)


COUNT = (
    "INSERT INTO flow_step_counts (flow_id, step, outcome, n) "
    "SELECT id, :cstep, :outcome, :n FROM flows WHERE key = 'raw' "
    "ON CONFLICT (flow_id, step, outcome) DO UPDATE SET n = flow_step_counts.n + excluded.n"
)


def run_raw(engine: Any, n: int) -> dict[str, Any]:
    """The same set updates by hand (flow row made directly, no batching)."""
    postgres = engine.dialect.name == "postgresql"

    def ts(at: datetime) -> Any:
        return at if postgres else at.strftime("%Y-%m-%d %H:%M:%S.%f")

    timings: dict[str, float] = {}
    steps = sent = 0
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO flows (key, name, definition, version, status, updated_at) "
                "VALUES ('raw', 'raw', '{}', 1, 'enabled', :t)"
            ),
            {"t": ts(T0)},
        )
    for day in (0, 4, 7):
        if day == 4:
            with engine.begin() as conn:
                _leave(conn, 5, 0, T0 + 2 * DAY, postgres)
        if day == 7:
            with engine.begin() as conn:
                _leave(conn, 10, 1, T0 + 5 * DAY, postgres)
        now = T0 + day * DAY
        p = {"now": ts(now), "false": False, "step": "s2" if day == 4 else "s4", "tag": TAG}
        started = time.perf_counter()
        with engine.begin() as conn:
            x = conn.execute
            if day == 0:
                # Entries made past the first send (as ours does): at s2, due after the wait.
                r = x(
                    text(
                        "INSERT INTO flow_entries (flow_id, contact_id, entered_at, step, step_at, "
                        "status, wake_at, waiting, holdout, path) SELECT f.id, sm.contact_id, "
                        ":now, 's2', :now, 'active', :wake, :false, :false, 's0=queued' "
                        "FROM segment_membership sm "
                        "JOIN contacts c ON c.id = sm.contact_id, flows f "
                        "WHERE f.key = 'raw' AND sm.exited_at IS NULL AND c.email_consent"
                    ),
                    {**p, "wake": ts(now + 4 * DAY)},
                )
                x(
                    text(
                        "INSERT INTO outbox (dedup_key, contact_id, channel, template, flow, entry_id, "
                        "step, priority, status, not_before, attempts, created_at) "
                        "SELECT 'raw:' || e.id || '\\:s0', e.contact_id, 'email', 'reactivation-1', "
                        "'raw', e.id, 's0', 'marketing', 'pending', :now, 0, :now "
                        "FROM flow_entries e WHERE e.step = 's2' AND e.status = 'active'"
                    ),
                    p,
                )
                x(text(COUNT), {"cstep": "s0", "outcome": "queued", "n": r.rowcount})
                steps += 3 * r.rowcount
            else:
                exits = EXIT_DAY4 if day == 4 else EXIT_DAY7
                r = x(text(exits), {**p, "tokens": f"{p['step']}=else"})
                x(text(COUNT), {"cstep": p["step"], "outcome": "else", "n": r.rowcount})
                steps += r.rowcount
                if day == 4:
                    x(
                        text(
                            "INSERT INTO outbox (dedup_key, contact_id, channel, template, flow, "
                            "entry_id, step, priority, status, not_before, attempts, created_at) "
                            "SELECT 'raw:' || e.id || '\\:s2.then.0', e.contact_id, 'email', "
                            "'reactivation-2', 'raw', e.id, 's2.then.0', 'marketing', 'pending', "
                            ":now, 0, :now FROM flow_entries e WHERE e.step = 's2' "
                            "AND e.status = 'active' AND e.wake_at <= :now"
                        ),
                        p,
                    )
                    r = x(
                        text(
                            "UPDATE flow_entries SET step = 's4', step_at = :now, wake_at = :wake, "
                            "path = coalesce(path || ' > ', '') || :tokens "
                            "WHERE step = 's2' AND status = 'active' AND wake_at <= :now"
                        ),
                        {**p, "wake": ts(now + 3 * DAY), "tokens": "s2=then > s2.then.0=queued"},
                    )
                    for cstep, outcome in (("s2", "then"), ("s2.then.0", "queued")):
                        x(text(COUNT), {"cstep": cstep, "outcome": outcome, "n": r.rowcount})
                    steps += 3 * r.rowcount
                else:
                    x(
                        text(
                            "INSERT INTO tag_history (contact_id, tag, action, at, source) "
                            "SELECT e.contact_id, :tag, 'added', :now, 'flow\\:raw' FROM flow_entries e "
                            "WHERE e.step = 's4' AND e.status = 'active' AND e.wake_at <= :now"
                        ),
                        p,
                    )
                    x(
                        text(
                            "INSERT INTO contact_tags (contact_id, tag, added_at, added_by) "
                            "SELECT e.contact_id, :tag, :now, 'flow\\:raw' FROM flow_entries e "
                            "WHERE e.step = 's4' AND e.status = 'active' AND e.wake_at <= :now"
                        ),
                        p,
                    )
                    r = x(
                        text(
                            "UPDATE flow_entries SET status = 'completed', exit_reason = 'completed', "
                            "exited_at = :now, wake_at = NULL, "
                            "path = coalesce(path || ' > ', '') || :tokens "
                            "WHERE step = 's4' AND status = 'active' AND wake_at <= :now"
                        ),
                        {**p, "tokens": "s4=then > s4.then.0=tagged"},
                    )
                    for cstep, outcome in (("s4", "then"), ("s4.then.0", "tagged")):
                        x(text(COUNT), {"cstep": cstep, "outcome": outcome, "n": r.rowcount})
                    steps += 2 * r.rowcount
            sent += _count_sink(conn, now, postgres)
        timings[f"day{day}"] = time.perf_counter() - started
    return {
        "seconds": sum(timings.values()),
        "per_day": timings,
        "contact_steps": steps,
        "sent": sent,
    }


def _one_database(kind: str, n: int, cluster: Any) -> dict[str, Any]:
    import winback
    from winback.store.engine import make_engine
    from winback.store.migrate import upgrade

    work = Path(tempfile.mkdtemp(prefix=f"bench-flows-{kind}-"))
    try:
        if kind == "sqlite":
            base = winback.init(work / "base", environ={})
            with base.engine.begin() as conn:
                _seed(conn, n, postgres=False)
            base.close()
            shutil.copytree(work / "base", work / "ours")
            shutil.copytree(work / "base", work / "raw")
            ours_ws = winback.open(work / "ours", environ={})
            raw_engine = make_engine(f"sqlite+pysqlite:///{work / 'raw' / 'winback.db'}")
        else:
            template_url = cluster.create_database("bench_flows_base")
            engine = make_engine(template_url)
            upgrade(engine)
            with engine.begin() as conn:
                _seed(conn, n, postgres=True)
            engine.dispose()
            ours_url = cluster.create_database("bench_flows_ours", template="bench_flows_base")
            raw_url = cluster.create_database("bench_flows_raw", template="bench_flows_base")
            env = {"WINBACK_DATABASE_URL": ours_url}
            winback.init(work / "ours", environ=env).close()
            ours_ws = winback.open(work / "ours", environ=env)
            raw_engine = make_engine(raw_url)
        try:
            ours = run_ours(ours_ws)
            raw = run_raw(raw_engine, n)
        finally:
            ours_ws.close()
            raw_engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = ours["seconds"] / raw["seconds"] if raw["seconds"] else float("nan")
    return {
        "contacts": n,
        "ours": ours,
        "raw": raw,
        "ratio": round(ratio, 2),
        "contact_steps_per_second": round(ours["contact_steps"] / ours["seconds"]),
    }


def _workers(n: int, cluster: Any) -> dict[str, Any]:
    """PostgreSQL: the same week on copies of the same data (the template the first run
    made) with one worker, then two."""
    import winback

    work = Path(tempfile.mkdtemp(prefix="bench-flows-workers-"))
    runs: dict[str, Any] = {}
    try:
        for count in (1, 2):
            url = cluster.create_database(f"bench_flows_w{count}", template="bench_flows_base")
            env = {"WINBACK_DATABASE_URL": url}
            winback.init(work / f"w{count}", environ=env).close()
            workers = [winback.open(work / f"w{count}", environ=env) for _ in range(count)]
            try:
                runs[f"workers_{count}"] = run_workers(workers)
            finally:
                for ws in workers:
                    ws.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, two = runs["workers_1"]["seconds"], runs["workers_2"]["seconds"]
    return {"contacts": n, **runs, "speedup": round(one / two, 2) if two else float("nan")}


def run(quick: bool) -> dict[str, Any]:
    """Environment: BENCH_FLOWS_N (contacts), BENCH_FLOWS_PG_N (contacts on PostgreSQL,
    default the same; 0 skips PostgreSQL), BENCH_FLOWS_DBS (``sqlite,postgres``),
    BENCH_FLOWS_WORKERS (0 skips the 1 vs 2 workers comparison on PostgreSQL)."""
    n = int(os.environ.get("BENCH_FLOWS_N", 20_000 if quick else 1_000_000))
    pg_n = int(os.environ.get("BENCH_FLOWS_PG_N", n))
    dbs = os.environ.get("BENCH_FLOWS_DBS", "sqlite,postgres").split(",")
    if pg_n <= 0:  # BENCH_FLOWS_PG_N=0: SQLite only
        dbs = [d for d in dbs if d != "postgres"]
    figures: dict[str, Any] = {}
    if "sqlite" in dbs:
        figures["sqlite"] = _one_database("sqlite", n, None)
        _print("sqlite", figures["sqlite"])
    if "postgres" in dbs:
        from tests.pgcluster import PostgresCluster

        cluster = PostgresCluster().start()
        try:
            figures["postgres"] = _one_database("postgres", pg_n, cluster)
            _print("postgres", figures["postgres"])
            if os.environ.get("BENCH_FLOWS_WORKERS", "1") != "0":
                figures["postgres_workers"] = _workers(pg_n, cluster)
                _print_workers(figures["postgres_workers"])
        finally:
            cluster.stop()
    figures["target"] = "SQLite: whole flow < 60 s and within 3x of the raw SQL bound"
    # The machine is shared: the 1/5/15-minute load averages when the runs ended.
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return figures


def _print(kind: str, f: dict[str, Any]) -> None:
    ours, raw = f["ours"], f["raw"]
    print(
        f"{kind}: {f['contacts']:,} contacts, {ours['contact_steps']:,} contact-steps, "
        f"{ours['sent']:,} messages; ours {ours['seconds']:.1f} s "
        f"({f['contact_steps_per_second']:,} contact-steps/s) vs raw SQL {raw['seconds']:.1f} s "
        f"-> {f['ratio']}x; per day ours "
        + ", ".join(f"{k} {v:.1f}s" for k, v in ours["per_day"].items())
        + f"; longest write transaction {ours['longest_write_ms']} ms"
        f" of {ours['write_transactions']:,}",
        flush=True,
    )


def _print_workers(f: dict[str, Any]) -> None:
    one, two = f["workers_1"], f["workers_2"]
    print(
        f"postgres workers: {f['contacts']:,} contacts; 1 worker {one['seconds']:.1f} s, "
        f"2 workers {two['seconds']:.1f} s -> {f['speedup']}x; contact-steps per worker "
        f"{two['steps_per_worker']}; longest write transaction {two['longest_write_ms']} ms",
        flush=True,
    )
