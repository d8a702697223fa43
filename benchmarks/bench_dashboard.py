"""The dashboard's pages and the management API's main reads on a shop of 1,000,000 contacts
and 10,000,000 events (SQLite), through the real service (uvicorn on 127.0.0.1), each beside
the single SQL query the page needs, run directly on the same database.

The workspace comes from :mod:`benchmarks.dashboard_workspace` (built once, about 2.1M orders,
consent, tags, the shipped segments refreshed, the reference flow run for two weeks with its
messages, an analysis of the day) and is kept between runs in
``WINBACK_BENCH_DASHBOARD_DIR`` (default ``benchmarks/work/dashboard-<contacts>``, ignored by
git); the server only reads it (it is started without the engine loop).

Each page is asked ``WINBACK_BENCH_DASHBOARD_REQUESTS`` times (default 40; 5 with
``--quick``) after two warm-up requests, one request at a time over a keep-alive connection
with an API key, its parameters spread over the workspace: different segments and pages of
members, RFM cells and segments, contacts (from the busiest to one-order customers), the
reference flow and its companion. Its reference query runs as many times, with the same
spread, on a read-only ``sqlite3`` connection. Printed and recorded: p50 and p95 of both and
the ratio of the p95s. A page that the server does not have yet (404 on its first path) is
listed as absent. Nothing here fails on a slow figure: the target (p95 < 300 ms) is reported,
not asserted.

Environment: ``WINBACK_BENCH_DASHBOARD_CONTACTS`` (default 1,000,000; 5,000 with
``--quick``), ``WINBACK_BENCH_DASHBOARD_DIR``, ``WINBACK_BENCH_DASHBOARD_REQUESTS``,
``WINBACK_BENCH_DASHBOARD_PAGES`` (comma-separated page names, to measure a few).

The reference queries are constants of this file (hence S608 off).
"""

# ruff: noqa: S608

from __future__ import annotations

import http.client
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks import dashboard_workspace
from benchmarks.bench_service import free_port

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300.0
PAGE_SIZE = 50


# -- what is measured --------------------------------------------------------------------------


@dataclass
class Sample:
    """Identifiers drawn from the workspace to spread the requests over."""

    now: datetime
    segments: list[tuple[int, str, int]]  # id, name, members
    cells: list[tuple[int, int]]  # (r, f) with members
    rfm_segments: list[str]
    contacts: list[int]  # ids, busiest first, then a spread
    customer_ids: list[str]  # the shop's ids of the same contacts
    max_id: int
    flows: list[str]  # keys
    templates: list[str]
    tags: list[str]
    variants: dict[str, int] = field(default_factory=dict)

    def pick(self, items: list[Any], i: int) -> Any:
        return items[i % len(items)]


@dataclass(frozen=True)
class Page:
    """A page (or API read): its request for the i-th sample, and the single SQL query
    (with its parameters for the same sample) that it needs."""

    name: str
    path: Callable[[Sample, int], str]
    sql: str
    params: Callable[[Sample, int], dict[str, Any]] = lambda _s, _i: {}
    #: The same figures computed live from the base tables, for a page that reads them from
    #: a snapshot instead (shown for comparison, not the ratio's denominator).
    live_sql: str | None = None
    live_params: Callable[[Sample, int], dict[str, Any]] = lambda _s, _i: {}


def _cut(s: Sample, days: int) -> str:
    return (s.now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f")


#: What the overview would cost computed live from the contacts (one scan), for comparison
#: with the snapshot reads the page makes.
OVERVIEW_LIVE_SQL = """
SELECT count(*) AS contacts, sum(orders_count > 0) AS buyers, sum(revenue_total) AS revenue,
    sum(orders_count > 0 AND coalesce(last_purchase_at, '') < :cut
        AND coalesce(last_email_opened, '') < :cut
        AND coalesce(last_email_link_clicked, '') < :cut
        AND coalesce(last_seen, '') < :cut) AS dormant_90d,
    sum(orders_count > 0 AND p_alive < 0.5) AS dormant_p_alive,
    sum(email_consent = 1) AS email_consent, sum(sms_consent = 1) AS sms_consent
FROM contacts WHERE erased_at IS NULL"""

SNAPSHOTS_SQL = """
SELECT kind, snapshot_date, data FROM daily_snapshots WHERE kind = :kind
ORDER BY snapshot_date DESC LIMIT 90"""

OVERVIEW_SQL = """
SELECT k.kind, k.snapshot_date, k.data, NULL FROM daily_snapshots k
WHERE k.kind IN ('base', 'analysis') AND k.snapshot_date >= date(:today, '-90 days')
UNION ALL SELECT 'flow', f.key, f.status, (SELECT count(*) FROM flow_entries e
    WHERE e.flow_id = f.id AND e.status = 'active') FROM flows f"""

RFM_LIVE_SQL = """
SELECT rfm_r, rfm_f, count(*), sum(revenue_total) FROM contacts
WHERE rfm_r IS NOT NULL GROUP BY rfm_r, rfm_f"""

MEMBER_COLUMNS = (
    "c.id, c.customer_id, c.email, c.first_name, c.last_name, c.orders_count, "
    "c.revenue_total, c.last_purchase_at, c.rfm_segment, c.p_alive"
)

SEGMENT_MEMBERS_SQL = f"""
SELECT {MEMBER_COLUMNS} FROM segment_membership m JOIN contacts c ON c.id = m.contact_id
WHERE m.segment_id = :segment AND m.exited_at IS NULL AND m.contact_id > :after
ORDER BY m.contact_id LIMIT {PAGE_SIZE + 1}"""

SEGMENT_SEARCH_SQL = f"""
SELECT {MEMBER_COLUMNS} FROM contacts c
WHERE c.email >= :q AND c.email < :q || char(1114111) AND EXISTS (SELECT 1
    FROM segment_membership m WHERE m.segment_id = :segment AND m.contact_id = c.id
    AND m.exited_at IS NULL)
ORDER BY c.id LIMIT {PAGE_SIZE + 1}"""

CONTACT_SQL = """
SELECT 'contact', id, NULL, NULL FROM contacts WHERE id = :id
UNION ALL SELECT 'consent', channel, granted, at FROM consent_log WHERE contact_id = :id
UNION ALL SELECT 'tag', tag, added_by, added_at FROM contact_tags WHERE contact_id = :id
UNION ALL SELECT 'tag_history', tag, action, at FROM tag_history WHERE contact_id = :id
UNION ALL SELECT * FROM (SELECT 'order', order_id, amount, ordered_at FROM orders
    WHERE contact_id = :id ORDER BY ordered_at DESC LIMIT 50)
UNION ALL SELECT * FROM (SELECT 'event', type, message_id, occurred_at FROM events
    WHERE contact_id = :id ORDER BY occurred_at DESC LIMIT 50)
UNION ALL SELECT * FROM (SELECT 'message', template, status, created_at FROM outbox
    WHERE contact_id = :id ORDER BY created_at DESC LIMIT 50)
UNION ALL SELECT 'flow', f.key, e.status, e.entered_at FROM flow_entries e
    JOIN flows f ON f.id = e.flow_id WHERE e.contact_id = :id"""

#: Entries per flow and status, and the messages delivered per flow (the flows list).
FLOWS_SQL = """
SELECT f.key, f.status, e.status, count(*), NULL FROM flows f
    JOIN flow_entries e ON e.flow_id = f.id GROUP BY f.id, e.status
UNION ALL SELECT flow, NULL, NULL, NULL, count(*) FROM outbox
    WHERE flow IS NOT NULL AND status = 'sent' GROUP BY flow"""

#: A flow's messages per step with their human opens and clicks (matched by message id),
#: and its entries per step and status: what its page shows, counted in one statement.
FLOW_SQL = """
SELECT o.step, count(*), sum(o.status = 'sent'),
    sum(EXISTS (SELECT 1 FROM events e WHERE e.message_id = o.message_id
                AND e.type = 'email_opened' AND e.machine = 0)),
    sum(EXISTS (SELECT 1 FROM events e WHERE e.message_id = o.message_id
                AND e.type = 'email_clicked' AND e.machine = 0))
FROM outbox o WHERE o.flow = :flow GROUP BY o.step
UNION ALL SELECT e.step, e.status, count(*), NULL, NULL FROM flow_entries e
    WHERE e.flow_id = (SELECT id FROM flows WHERE key = :flow) GROUP BY e.step, e.status"""

#: Past the last character of any text (the end of a prefix range).
TOP = "\U0010ffff"

#: The contact search as one statement: a prefix of the email, the first or the last name,
#: or the exact customer id; newest first, a page.
CONTACT_SEARCH_SQL = f"""
SELECT {MEMBER_COLUMNS} FROM contacts c
WHERE (c.email >= lower(:q) AND c.email < lower(:q) || :top)
    OR c.customer_id = :q
    OR (c.first_name >= :q AND c.first_name < :q || :top)
    OR (c.last_name >= :q AND c.last_name < :q || :top)
ORDER BY c.id DESC LIMIT {PAGE_SIZE + 1}"""

#: The diagram's counts: outcomes per step, and the entries per step and status.
FLOW_STEPS_SQL = """
SELECT step, outcome, n FROM flow_step_counts WHERE flow_id = (SELECT id FROM flows
    WHERE key = :flow)
UNION ALL SELECT e.step, e.status, count(*) FROM flow_entries e
    WHERE e.flow_id = (SELECT id FROM flows WHERE key = :flow) GROUP BY e.step, e.status"""

#: A flow's statistics: contacts per step, exits by reason, holdout and treatment, messages
#: per step and status, outcome counters.
STATS_SQL = """
WITH f AS (SELECT id FROM flows WHERE key = :flow)
SELECT 'active', step, count(*) FROM flow_entries
    WHERE flow_id = (SELECT id FROM f) AND status = 'active' GROUP BY step
UNION ALL SELECT status || ':' || coalesce(exit_reason, ''), holdout, count(*) FROM flow_entries
    WHERE flow_id = (SELECT id FROM f) GROUP BY status, exit_reason, holdout
UNION ALL SELECT step, status, count(*) FROM outbox WHERE flow = :flow GROUP BY step, status
UNION ALL SELECT step, outcome, n FROM flow_step_counts WHERE flow_id = (SELECT id FROM f)"""

SEGMENTS_SQL = "SELECT id, name, member_count, refreshed_at FROM segments ORDER BY name"


def pages() -> list[Page]:
    def segment(s: Sample, i: int) -> tuple[int, str, int]:
        return s.pick(s.segments, i)  # type: ignore[no-any-return]

    def after(s: Sample, i: int) -> int:
        """Where a keyset page starts: the first page, or somewhere in the ids."""
        return 0 if i % 3 == 0 else (i * 7919) % max(1, s.max_id)

    def cell(s: Sample, i: int) -> tuple[int, int]:
        return s.pick(s.cells, i)  # type: ignore[no-any-return]

    def name(s: Sample, i: int) -> str:
        return quote(segment(s, i)[1], safe="")

    def prefix(i: int) -> str:
        return f"customer{(i * 37) % 90 + 10}"

    def typed(s: Sample, i: int) -> str:
        """What a person types in the contact search: an email's beginning, a shop's
        customer id, a last name's beginning, or a first name."""
        kind = i % 4
        if kind == 0:
            return f"customer{contact(s, i)}@"
        if kind == 1:
            return s.customer_ids[i % len(s.customer_ids)]
        if kind == 2:
            return f"Shopper{(i * 31) % 997}"
        return dashboard_workspace.NAMES[i % len(dashboard_workspace.NAMES)]

    def flow(s: Sample, i: int) -> str:
        return s.pick(s.flows, i)  # type: ignore[no-any-return]

    def contact(s: Sample, i: int) -> int:
        return s.pick(s.contacts, i)  # type: ignore[no-any-return]

    return [
        Page("overview", lambda _s, _i: "/overview", OVERVIEW_SQL,
             lambda s, _i: {"today": s.now.date().isoformat()},
             live_sql=OVERVIEW_LIVE_SQL, live_params=lambda s, _i: {"cut": _cut(s, 90)}),
        Page("rfm", lambda _s, _i: "/rfm", SNAPSHOTS_SQL, lambda _s, _i: {"kind": "analysis"},
             live_sql=RFM_LIVE_SQL),
        Page("rfm cell members",
             lambda s, i: f"/rfm/members?r={cell(s, i)[0]}&f={cell(s, i)[1]}&after={after(s, i)}",
             f"SELECT {MEMBER_COLUMNS} FROM contacts c WHERE c.rfm_r = :r AND c.rfm_f = :f "
             f"AND c.id > :after ORDER BY c.id LIMIT {PAGE_SIZE + 1}",
             lambda s, i: {"r": cell(s, i)[0], "f": cell(s, i)[1], "after": after(s, i)}),
        Page("rfm segment members",
             lambda s, i: f"/rfm/members?segment={quote(s.pick(s.rfm_segments, i))}"
             f"&after={after(s, i)}",
             f"SELECT {MEMBER_COLUMNS} FROM contacts c WHERE c.rfm_segment = :segment "
             f"AND c.id > :after ORDER BY c.id LIMIT {PAGE_SIZE + 1}",
             lambda s, i: {"segment": s.pick(s.rfm_segments, i), "after": after(s, i)}),
        Page("segments", lambda _s, _i: "/segments", SEGMENTS_SQL),
        Page("segment members",
             lambda s, i: f"/segments/{name(s, i)}?after={after(s, i)}",
             SEGMENT_MEMBERS_SQL,
             lambda s, i: {"segment": segment(s, i)[0], "after": after(s, i)}),
        Page("segment search",
             lambda s, i: f"/segments/{name(s, i)}?q={prefix(i)}",
             SEGMENT_SEARCH_SQL,
             lambda s, i: {"segment": segment(s, i)[0], "q": prefix(i)}),
        Page("flows", lambda _s, _i: "/flows", FLOWS_SQL),
        Page("flows figures", lambda _s, _i: "/flows?figures=1", FLOWS_SQL),
        Page("flow", lambda s, i: f"/flows/{flow(s, i)}", FLOW_STEPS_SQL,
             lambda s, i: {"flow": flow(s, i)}),
        Page("flow results", lambda s, i: f"/flows/{flow(s, i)}/results", FLOW_SQL,
             lambda s, i: {"flow": flow(s, i)}),
        Page("contacts", lambda _s, _i: "/contacts",
             f"SELECT {MEMBER_COLUMNS} FROM contacts c ORDER BY c.id DESC LIMIT {PAGE_SIZE + 1}"),
        Page("contacts search", lambda s, i: f"/contacts?q={quote(typed(s, i))}",
             CONTACT_SEARCH_SQL, lambda s, i: {"q": typed(s, i), "top": TOP}),
        Page("contact", lambda s, i: f"/contacts/{contact(s, i)}", CONTACT_SQL,
             lambda s, i: {"id": contact(s, i)}),
        Page("templates", lambda _s, _i: "/templates", "SELECT 1"),
        Page("template preview",
             lambda s, i: f"/templates/{s.pick(s.templates, i)}?contact={contact(s, i)}",
             "SELECT * FROM contacts WHERE id = :id", lambda s, i: {"id": contact(s, i)}),
        Page("setup", lambda _s, _i: "/setup", "SELECT count(*) FROM api_keys"),
        Page("report", lambda _s, _i: "/report", SNAPSHOTS_SQL,
             lambda _s, _i: {"kind": "analysis"}),
        Page("report view", lambda _s, _i: "/report/view", SNAPSHOTS_SQL,
             lambda _s, _i: {"kind": "analysis"}),
        Page("api segments", lambda _s, _i: "/api/v1/segments", SEGMENTS_SQL),
        Page("api segment members",
             lambda s, i: f"/api/v1/segments/{name(s, i)}/members?limit={PAGE_SIZE}",
             SEGMENT_MEMBERS_SQL,
             lambda s, i: {"segment": segment(s, i)[0], "after": 0}),
        Page("api flows", lambda _s, _i: "/api/v1/flows", FLOWS_SQL),
        Page("api flow stats", lambda s, i: f"/api/v1/flows/{flow(s, i)}", STATS_SQL,
             lambda s, i: {"flow": flow(s, i)}),
        Page("api flow results", lambda s, i: f"/api/v1/flows/{flow(s, i)}/results",
             FLOW_SQL, lambda s, i: {"flow": flow(s, i)}),
        Page("api contact",
             lambda s, i: f"/api/v1/contacts/{s.customer_ids[i % len(s.customer_ids)]}",
             "SELECT * FROM contacts WHERE customer_id = :ref",
             lambda s, i: {"ref": s.customer_ids[i % len(s.customer_ids)]}),
        Page("api tags", lambda _s, _i: "/api/v1/tags",
             "SELECT tag, count(*) FROM contact_tags GROUP BY tag"),
    ]  # fmt: skip


def sample(database: Path, now: datetime) -> Sample:
    """Segments, cells, contacts and flows to spread the requests over."""
    db = _readonly(database)
    try:
        q = db.execute
        segments = [
            (int(i), str(n), int(c or 0))
            for i, n, c in q("SELECT id, name, member_count FROM segments ORDER BY id")
        ]
        cells = [
            (int(r), int(f))
            for r, f in q(
                "SELECT DISTINCT rfm_r, rfm_f FROM contacts WHERE rfm_r IS NOT NULL "
                "ORDER BY rfm_r, rfm_f"
            )
        ] or [(1, 1)]
        rfm_segments = [
            str(s)
            for (s,) in q(
                "SELECT DISTINCT segment FROM rfm_snapshots WHERE snapshot_date = "
                "(SELECT max(snapshot_date) FROM rfm_snapshots) ORDER BY segment"
            )
        ] or ["Champions"]
        busiest = [
            int(c) for (c,) in q("SELECT id FROM contacts ORDER BY orders_count DESC LIMIT 5")
        ]
        total = int(q("SELECT max(id) FROM contacts").fetchone()[0])
        spread = [1 + (k * 104729) % total for k in range(1, 36)]
        in_flow = [
            int(c) for (c,) in q("SELECT contact_id FROM flow_entries ORDER BY id DESC LIMIT 10")
        ]
        flows = [str(k) for (k,) in q("SELECT key FROM flows ORDER BY key")]
        tags = [str(t) for (t,) in q("SELECT DISTINCT tag FROM contact_tags ORDER BY tag")]
        chosen = busiest + in_flow + spread
        customer_ids = [
            str(q("SELECT customer_id FROM contacts WHERE id = ?", (c,)).fetchone()[0])
            for c in chosen
        ]
    finally:
        db.close()
    templates = sorted(
        p.stem.split(".")[0]
        for p in (database.parent / "templates").glob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    return Sample(
        now=now,
        segments=segments,
        cells=cells,
        rfm_segments=rfm_segments,
        contacts=chosen,
        customer_ids=customer_ids,
        max_id=total,
        flows=flows,
        templates=sorted(set(templates)) or ["reactivation-1"],
        tags=tags,
    )


# -- the server ----------------------------------------------------------------------------


def serve(folder: str, port: int) -> None:
    """The server process: the product's app without the engine loop, on uvicorn."""
    import uvicorn

    import winback
    from winback.web.app import create_app

    ws = winback.open(folder)
    app = create_app(ws, background=False)
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        ws.close()


class Server:
    """``python -m benchmarks.bench_dashboard serve FOLDER PORT`` as a child process."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_dashboard", "serve", str(folder),
             str(self.port)],
            cwd=ROOT,
            env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited at start")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- measuring -------------------------------------------------------------------------------


def _readonly(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)


def percentile(values: list[float], p: float) -> float | None:
    """The value below which a share ``p`` of the sorted values lies (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class Client:
    """One keep-alive connection with the API key."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "text/html"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str) -> tuple[int, int, float]:
        """Status, body length and seconds to the last byte of the body. A connection the
        server closed while idle (its keep-alive timeout) is opened again, untimed."""
        for attempt in (1, 2):
            began = time.perf_counter()
            try:
                self.conn.request("GET", path, headers=self.headers)
                response = self.conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    raise
                continue
            return response.status, len(body), time.perf_counter() - began
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def measure_page(
    page: Page, client: Client, db: sqlite3.Connection, s: Sample, requests: int
) -> dict[str, Any]:
    sql_times: list[float] = []
    db.execute(page.sql, page.params(s, 0)).fetchall()
    for i in range(requests):
        began = time.perf_counter()
        db.execute(page.sql, page.params(s, i)).fetchall()
        sql_times.append(time.perf_counter() - began)
    s50, s95 = percentile(sql_times, 0.5), percentile(sql_times, 0.95)
    live: dict[str, Any] = {}
    if page.live_sql is not None:
        live_times = []
        for i in range(min(requests, 5)):
            began = time.perf_counter()
            db.execute(page.live_sql, page.live_params(s, i)).fetchall()
            live_times.append(time.perf_counter() - began)
        live = {"live_sql_p50_ms": _ms(percentile(live_times, 0.5))}
    first = page.path(s, 0)
    status, _size, _t = client.get(first)
    if status == 404:
        return {
            "path": first,
            "absent": True,
            "sql_p50_ms": _ms(s50),
            "sql_p95_ms": _ms(s95),
        } | live
    client.get(page.path(s, 1))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sizes: list[int] = []
    for i in range(requests):
        status, size, seconds = client.get(page.path(s, i))
        latencies.append(seconds)
        sizes.append(size)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    return {
        "path": first,
        "requests": requests,
        "statuses": statuses,
        "p50_ms": _ms(p50),
        "p95_ms": _ms(p95),
        "max_ms": _ms(max(latencies)),
        "bytes_p50": int(percentile([float(x) for x in sizes], 0.5) or 0),
        "sql_p50_ms": _ms(s50),
        "sql_p95_ms": _ms(s95),
        "ratio_p95": round(p95 / s95, 2) if p95 and s95 else None,
        # Only a page that answered every request with 200 can meet the target.
        "under_target": bool(
            p95 is not None and p95 * 1000 < TARGET_MS and set(statuses) == {"200"}
        ),
    } | live


def measure(
    folder: Path, now: datetime, requests: int, only: set[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Every page against a server on the workspace in ``folder``."""
    import winback
    from winback.store import apikeys

    ws = winback.open(folder, environ={})
    try:
        key = apikeys.create(
            ws.engine,
            f"bench-dashboard-{time.time_ns()}",
            at=ws.clock.now(),
            scope=apikeys.Scope.READ,
        )
    finally:
        ws.close()
    s = sample(folder / "winback.db", now)
    server = Server(folder)
    client = Client(server.port, key)
    db = _readonly(folder / "winback.db")
    out: dict[str, dict[str, Any]] = {}
    try:
        for page in pages():
            if only and page.name not in only:
                continue
            out[page.name] = measure_page(page, client, db, s, requests)
            _print_row(page.name, out[page.name])
    finally:
        db.close()
        client.close()
        server.stop()
    return out


def _print_header() -> None:
    print(
        f"  {'page':<22} {'p50 ms':>8} {'p95 ms':>8} {'SQL p50':>8} {'SQL p95':>8} "
        f"{'ratio':>6} {'< 300':>6} {'live SQL':>9}  path",
        flush=True,
    )


def _print_row(name: str, f: dict[str, Any]) -> None:
    live = f.get("live_sql_p50_ms") or "-"
    if f.get("absent"):
        print(
            f"  {name:<22} {'absent (404)':>17} {f['sql_p50_ms']:>8} {f['sql_p95_ms']:>8}"
            f"{'':>14} {live:>9}  {f['path']}",
            flush=True,
        )
        return
    bad = {k: v for k, v in f["statuses"].items() if k != "200"}
    print(
        f"  {name:<22} {f['p50_ms']:>8} {f['p95_ms']:>8} {f['sql_p50_ms']:>8} "
        f"{f['sql_p95_ms']:>8} {f['ratio_p95'] or '-':>6} {'yes' if f['under_target'] else 'NO':>6}"
        f" {live:>9}  {f['path']}{f'  statuses {bad}' if bad else ''}",
        flush=True,
    )


def run(quick: bool) -> dict[str, Any]:
    contacts = int(
        os.environ.get("WINBACK_BENCH_DASHBOARD_CONTACTS", "5000" if quick else "1000000")
    )
    requests = int(os.environ.get("WINBACK_BENCH_DASHBOARD_REQUESTS", "5" if quick else "40"))
    only = {n.strip() for n in os.environ.get("WINBACK_BENCH_DASHBOARD_PAGES", "").split(",")}
    only.discard("")
    load_before = os.getloadavg()
    built = dashboard_workspace.ensure(contacts)
    print(
        f"{contacts:,} contacts, {built.manifest['rows']['events']:,} events, "
        f"{built.manifest['rows']['orders']:,} orders; {requests} requests per page",
        flush=True,
    )
    _print_header()
    figures: dict[str, Any] = {
        "contacts": contacts,
        "workspace": {
            "folder": str(built.folder),
            "build_seconds": built.manifest["build_seconds"],
            "steps_seconds": built.manifest["steps_seconds"],
            "rows": built.manifest["rows"],
        },
        "requests_per_page": requests,
        "pages": measure(built.folder, built.now, requests, only or None),
        "target": f"every page p95 < {TARGET_MS:.0f} ms on 1,000,000 contacts (SQLite)",
    }
    over = [n for n, f in figures["pages"].items() if not f.get("absent") and not f["under_target"]]
    print(f"  above {TARGET_MS:.0f} ms at p95: {', '.join(over) or 'none'}", flush=True)
    figures["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit("usage: python -m benchmarks dashboard (or make bench BENCH=dashboard)")
