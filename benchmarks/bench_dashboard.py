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
import socket
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


def _cut(s: Sample, days: int) -> str:
    return (s.now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S.%f")


OVERVIEW_SQL = """
SELECT count(*) AS contacts, sum(orders_count > 0) AS buyers, sum(revenue_total) AS revenue,
    sum(orders_count > 0 AND coalesce(last_purchase_at, '') < :cut
        AND coalesce(last_email_opened, '') < :cut
        AND coalesce(last_email_link_clicked, '') < :cut
        AND coalesce(last_seen, '') < :cut) AS dormant_90d,
    sum(orders_count > 0 AND p_alive < 0.5) AS dormant_p_alive,
    sum(email_consent = 1) AS email_consent, sum(sms_consent = 1) AS sms_consent
FROM contacts WHERE erased_at IS NULL"""

RFM_SQL = """
SELECT rfm_r, rfm_f, count(*), sum(revenue_total) FROM contacts
WHERE rfm_r IS NOT NULL GROUP BY rfm_r, rfm_f"""

MEMBERS_COLUMNS = "c.id, c.customer_id, c.email, c.first_name, c.last_name, c.last_purchase_at, "
MEMBERS_COLUMNS += "c.orders_count, c.revenue_total"

SEGMENT_MEMBERS_SQL = f"""
SELECT {MEMBERS_COLUMNS} FROM segment_membership m JOIN contacts c ON c.id = m.contact_id
WHERE m.segment_id = :segment AND m.exited_at IS NULL
ORDER BY m.contact_id LIMIT {PAGE_SIZE} OFFSET :offset"""

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

FLOWS_SQL = """
SELECT f.key, f.status, count(e.id), sum(e.status = 'active')
FROM flows f LEFT JOIN flow_entries e ON e.flow_id = f.id GROUP BY f.id"""

FLOW_SQL = """
SELECT o.step, count(*), sum(o.status = 'sent'),
    sum(EXISTS (SELECT 1 FROM events e WHERE e.message_id = o.message_id
                AND e.type = 'email_opened' AND e.machine = 0)),
    sum(EXISTS (SELECT 1 FROM events e WHERE e.message_id = o.message_id
                AND e.type = 'email_clicked' AND e.machine = 0))
FROM outbox o WHERE o.flow = :flow GROUP BY o.step"""

SEGMENTS_SQL = "SELECT id, name, member_count, refreshed_at FROM segments ORDER BY name"


def pages() -> list[Page]:
    def segment(s: Sample, i: int) -> tuple[int, str, int]:
        return s.pick(s.segments, i)  # type: ignore[no-any-return]

    def member_offset(s: Sample, i: int) -> int:
        members = segment(s, i)[2]
        return ((i * 7919) % max(1, members // PAGE_SIZE)) * PAGE_SIZE if i % 3 else 0

    def cell(s: Sample, i: int) -> tuple[int, int]:
        return s.pick(s.cells, i)  # type: ignore[no-any-return]

    return [
        Page("overview", lambda _s, _i: "/overview", OVERVIEW_SQL,
             lambda s, _i: {"cut": _cut(s, 90)}),
        Page("rfm", lambda _s, _i: "/rfm", RFM_SQL),
        Page("rfm cell members",
             lambda s, i: f"/rfm/members?r={cell(s, i)[0]}&f={cell(s, i)[1]}",
             f"SELECT {MEMBERS_COLUMNS} FROM contacts c WHERE c.rfm_r = :r AND c.rfm_f = :f "
             f"ORDER BY c.id LIMIT {PAGE_SIZE}",
             lambda s, i: {"r": cell(s, i)[0], "f": cell(s, i)[1]}),
        Page("rfm segment members",
             lambda s, i: f"/rfm/members?segment={quote(s.pick(s.rfm_segments, i))}",
             f"SELECT {MEMBERS_COLUMNS} FROM contacts c WHERE c.rfm_segment = :segment "
             f"ORDER BY c.id LIMIT {PAGE_SIZE}",
             lambda s, i: {"segment": s.pick(s.rfm_segments, i)}),
        Page("segments", lambda _s, _i: "/segments", SEGMENTS_SQL),
        Page("segment members",
             lambda s, i: f"/segments/{quote(segment(s, i)[1], safe='')}"
                          + (f"?after={s.pick(s.contacts, i)}" if i % 3 else ""),
             SEGMENT_MEMBERS_SQL,
             lambda s, i: {"segment": segment(s, i)[0], "offset": member_offset(s, i)}),
        Page("segment search",
             lambda s, i: f"/segments/{quote(segment(s, i)[1], safe='')}?q=customer{(i * 37) % 90 + 10}",
             f"SELECT {MEMBERS_COLUMNS} FROM segment_membership m "
             "JOIN contacts c ON c.id = m.contact_id WHERE m.segment_id = :segment "
             "AND m.exited_at IS NULL AND (c.email LIKE :q OR c.customer_id LIKE :q "
             f"OR c.first_name LIKE :q) ORDER BY m.contact_id LIMIT {PAGE_SIZE}",
             lambda s, i: {"segment": segment(s, i)[0], "q": f"%customer{(i * 37) % 90 + 10}%"}),
        Page("flows", lambda _s, _i: "/flows", FLOWS_SQL),
        Page("flow", lambda s, i: f"/flows/{s.pick(s.flows, i)}", FLOW_SQL,
             lambda s, i: {"flow": s.pick(s.flows, i)}),
        Page("contact", lambda s, i: f"/contacts/{s.pick(s.contacts, i)}", CONTACT_SQL,
             lambda s, i: {"id": s.pick(s.contacts, i)}),
        Page("contacts search", lambda s, i: f"/contacts?q=customer{s.pick(s.contacts, i)}@",
             f"SELECT {MEMBERS_COLUMNS} FROM contacts c WHERE c.email = :email",
             lambda s, i: {"email": f"customer{s.pick(s.contacts, i)}@example.com"}),
        Page("template preview",
             lambda s, i: f"/templates/{s.pick(s.templates, i)}?contact={s.pick(s.contacts, i)}",
             "SELECT * FROM contacts WHERE id = :id",
             lambda s, i: {"id": s.pick(s.contacts, i)}),
        Page("setup", lambda _s, _i: "/setup", "SELECT count(*) FROM api_keys"),
        Page("report", lambda _s, _i: "/report", RFM_SQL),
        Page("api segments", lambda _s, _i: "/api/v1/segments", SEGMENTS_SQL),
        Page("api segment members",
             lambda s, i: f"/api/v1/segments/{segment(s, i)[0]}/members?offset={member_offset(s, i)}&limit={PAGE_SIZE}",
             SEGMENT_MEMBERS_SQL,
             lambda s, i: {"segment": segment(s, i)[0], "offset": member_offset(s, i)}),
        Page("api flows", lambda _s, _i: "/api/v1/flows", FLOWS_SQL),
        Page("api flow stats", lambda s, i: f"/api/v1/flows/{s.pick(s.flows, i)}/stats",
             "SELECT step, outcome, n FROM flow_step_counts WHERE flow_id = "
             "(SELECT id FROM flows WHERE key = :flow)",
             lambda s, i: {"flow": s.pick(s.flows, i)}),
        Page("api flow results", lambda s, i: f"/api/v1/flows/{s.pick(s.flows, i)}/results",
             FLOW_SQL, lambda s, i: {"flow": s.pick(s.flows, i)}),
        Page("api contact",
             lambda s, i: f"/api/v1/contacts/{s.pick(s.contacts, i)}",
             "SELECT * FROM contacts WHERE id = :id",
             lambda s, i: {"id": s.pick(s.contacts, i)}),
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
        contacts=busiest + in_flow + spread,
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m benchmarks.bench_dashboard serve FOLDER PORT`` as a child process."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
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
        """Status, body length and seconds to the last byte of the body."""
        began = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            raise
        return response.status, len(body), time.perf_counter() - began

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
    first = page.path(s, 0)
    status, _size, _t = client.get(first)
    if status == 404:
        return {"path": first, "absent": True, "sql_p50_ms": _ms(s50), "sql_p95_ms": _ms(s95)}
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
        "under_target": bool(p95 is not None and p95 * 1000 < TARGET_MS),
    }


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
        f"{'ratio':>6} {'< 300':>6}  path",
        flush=True,
    )


def _print_row(name: str, f: dict[str, Any]) -> None:
    if f.get("absent"):
        print(
            f"  {name:<22} {'absent (404)':>17} {f['sql_p50_ms']:>8} {f['sql_p95_ms']:>8}"
            f"{'':>14}  {f['path']}",
            flush=True,
        )
        return
    bad = {k: v for k, v in f["statuses"].items() if k != "200"}
    print(
        f"  {name:<22} {f['p50_ms']:>8} {f['p95_ms']:>8} {f['sql_p50_ms']:>8} "
        f"{f['sql_p95_ms']:>8} {f['ratio_p95'] or '-':>6} {'yes' if f['under_target'] else 'NO':>6}"
        f"  {f['path']}{f'  statuses {bad}' if bad else ''}",
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
