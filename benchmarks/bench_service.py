"""The event API under concurrent load, on a real uvicorn server on 127.0.0.1, measured side
by side in one run:

(a) the HTTP stack's own ceiling: a no-op ``POST`` route added to the same app object (in the
    benchmark's server process, not in the product), no engine;
(b) single events (``POST /api/v1/events``) and batched events (``POST /api/v1/events/batch``,
    ``BATCH`` events each) with no engine running (``create_app(ws, background=False)``);
(c) the same while the engine (``create_app(ws, background=True)``, as ``winback serve``)
    works through the reference flow's first pass over the whole workspace (every contact a
    dormant customer with email consent: segment refresh, enrolment, first email, then the
    dry-run delivery of those emails);
(d) during (c), one-click unsubscribes (``POST /u/{token}``, ``List-Unsubscribe=One-Click``)
    at a steady rate from another connection: their latency (p50, p99, max) and statuses;
(e) offered load: batched events sent at a fixed rate (``BENCH_SERVICE_PACED_RATE`` events/s,
    default 20,000) on a fixed schedule over the same 4 connections, without the engine (after
    (b), once the journal is empty; ``BENCH_SERVICE_PACED_SECONDS``, default 60) and during a
    first pass of its own (a third copy of the workspace, so that (c) is unchanged), from 1 s
    into the pass until the pass ends or ``BENCH_SERVICE_PASS_SECONDS`` (default 300) have
    passed: enrolment, rendering and delivery. It reports what was offered, accepted and stored in
    the window (events in the store at its end minus at its start, read from the store), the
    journal's backlog at the window's start and end (a rate is sustained when the backlog does
    not grow), and the p99 of a batch request counted from the time it was due (as ``wrk2``),
    so that a server falling behind the schedule shows in the latency.

Load: ``wrk`` (Debian package) with 4 connections on 2 threads, a Lua script giving every
event a unique ``event_id`` (for random known customers) and counting responses by status.
Every event is a ``page_view``, so each one also moves its contact's ``last_seen``.

Environment: ``BENCH_SERVICE_CONTACTS`` (default 100,000; ``--quick`` 10,000),
``BENCH_SERVICE_SECONDS`` (each measurement, default 10; ``--quick`` 3),
``BENCH_SERVICE_DBS`` (``sqlite,postgres``; or ``BENCH_SERVICE_DB=postgres``),
``BENCH_SERVICE_UNSUB_RATE`` (unsubscribes per second, default 20),
``BENCH_SERVICE_PACED_RATE`` (offered events per second, default 20,000).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 4
THREADS = 2
BATCH = 100
UNSUB_RATE = float(os.environ.get("BENCH_SERVICE_UNSUB_RATE", "20"))
PACED_RATE = float(os.environ.get("BENCH_SERVICE_PACED_RATE", "20000"))
#: Window of the paced load without the engine: long enough that the slice or two of
#: events the applier has in hand at its end (a few thousand) weigh little in the rate.
PACED_SECONDS = float(os.environ.get("BENCH_SERVICE_PACED_SECONDS", "60"))
#: Longest window of the paced load during a pass (it ends with the pass when sooner).
PASS_SECONDS = float(os.environ.get("BENCH_SERVICE_PASS_SECONDS", "300"))
NOOP_PATH = "/bench/noop"
#: No quiet hours, so that the engine's pass renders and delivers its emails whatever the
#: time of day the benchmark runs at (with the default quiet hours, a run at night would
#: measure a lighter pass that defers every email).
AROUND_THE_CLOCK = {"WINBACK_QUIET_HOURS": ""}
#: The engine in a child process (as ``winback serve``) or in a thread of the server
#: (``BENCH_SERVICE_ENGINE=thread``).
ENGINE_PROCESS = os.environ.get("BENCH_SERVICE_ENGINE", "process") != "thread"

LUA = r"""
local threads = {}
local counter = 0
local prefix = "%(prefix)s"
local contacts = %(contacts)d
local batch = %(batch)d

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  codes = {}
  math.randomseed(tid * 7919 + os.time())
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer %(key)s"
end

local function event()
  counter = counter + 1
  return string.format('{"customer_id":"c%%d","type":"page_view","event_id":"%%s-%%d-%%d"}',
    math.random(1, contacts), prefix, tid, counter)
end

function request()
  local body
  if batch > 0 then
    local events = {}
    for i = 1, batch do events[i] = event() end
    body = '{"events":[' .. table.concat(events, ",") .. ']}'
  else
    body = event()
  end
  return wrk.format("POST", "%(path)s", nil, body)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%%d":%%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%%d,"duration_us":%%d,"codes":{%%s},"p50_us":%%d,"p99_us":%%d,' ..
    '"max_us":%%d,"socket_errors":%%d}\n',
    summary.requests, summary.duration, table.concat(parts, ","),
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout))
end
"""


# -- the workspace ---------------------------------------------------------------------------


def _seed(conn: Any, n: int, unsubscribable: int, postgres: bool, now: datetime) -> None:
    """n dormant customers with email consent (one order 200 days ago each), and a sent
    message for the first ``unsubscribable`` (their unsubscribe links)."""

    def ts(at: datetime) -> datetime | str:
        return at if postgres else at.strftime("%Y-%m-%d %H:%M:%S.%f")

    old = now - timedelta(days=200)
    seq = (
        "generate_series(1, :n) AS s(x)"
        if postgres
        else "(WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < :n) "
        "SELECT x FROM seq) AS s"
    )
    true = "true" if postgres else "1"
    conn.execute(
        text(
            "INSERT INTO contacts (customer_id, email, first_name, attributes, orders_count, "  # noqa: S608
            "revenue_total, first_purchase_at, last_purchase_at, email_consent, created_at, "
            f"updated_at) SELECT 'c' || x, 'c' || x || '@x.test', 'Ada', '{{}}', 1, 20, :old, "
            f":old, {true}, :old, :old FROM {seq}"
        ),
        {"n": n, "old": ts(old)},
    )
    conn.execute(
        text(
            "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency) "
            "SELECT 'o' || id, id, :old, 20, 'USD' FROM contacts"
        ),
        {"old": ts(old)},
    )
    conn.execute(
        text(
            "INSERT INTO outbox (dedup_key, contact_id, channel, template, priority, status, "
            "not_before, attempts, created_at, sent_at) SELECT 'bench:' || id, id, 'email', "
            "'reactivation-1', 'marketing', 'sent', :old, 1, :old, :old FROM contacts "
            "WHERE id <= :k"
        ),
        {"old": ts(old), "k": unsubscribable},
    )
    conn.execute(text("ANALYZE"))


def _build(
    folder: Path, n: int, unsubscribable: int, environ: dict[str, str]
) -> tuple[str, list[str]]:
    """A workspace with n contacts and the reference flow; returns an API key and the
    one-click unsubscribe paths."""
    import winback
    from winback.delivery.links.tokens import TokenSigner
    from winback.store import apikeys
    from winback.store.schema import outbox

    ws = winback.init(folder, environ=environ)
    now = datetime.now(UTC)
    try:
        with ws.engine.begin() as conn:
            _seed(conn, n, unsubscribable, ws.engine.dialect.name == "postgresql", now)
        ws.flows.add("reactivation", now=now - timedelta(days=1))
        ws.flows.pause("reactivation-companion")
        key = apikeys.create(ws.engine, "bench", at=ws.clock.now())
        signer = TokenSigner(ws.settings.secret_key)
        with ws.engine.connect() as conn:
            rows = conn.execute(select(outbox.c.id, outbox.c.contact_id).order_by(outbox.c.id))
            paths = [f"/u/{signer.sign('u', int(m), int(c))}" for m, c in rows]
    finally:
        ws.close()
    return key, paths


# -- the server ------------------------------------------------------------------------------


def serve(folder: str, port: int, engine: bool) -> None:
    """The server process: the product's app plus a no-op route, on uvicorn."""
    import uvicorn

    import winback
    from winback.web.app import create_app

    ws = winback.open(folder)
    app = create_app(
        ws, background=engine, engine_process=ENGINE_PROCESS, applier_process=ENGINE_PROCESS
    )

    @app.post(NOOP_PATH, include_in_schema=False)
    async def noop() -> dict[str, bool]:
        return {"ok": True}

    profile = os.environ.get("EB_PROFILE")
    try:
        if profile:
            import cProfile

            cProfile.runctx(
                "uvicorn.run(app, host='127.0.0.1', port=port, log_level='warning', access_log=False)",
                globals(),
                locals(),
                profile,
            )
        else:
            uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        ws.close()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the benchmarks' servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, folder: Path, *, engine: bool, environ: dict[str, str]) -> None:
        self.port = free_port()
        self.folder = folder
        env = {**os.environ, **environ}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_service", "serve", str(folder), str(self.port)]
            + (["engine"] if engine else []),
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 60
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
        raise RuntimeError("the server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the load --------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds(pid: int, name: str) -> float:
    """CPU time so far of the live child processes of ``pid`` called ``name``
    (``winback-engine``, ``winback-applier``)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    total += _cpu_seconds(int(child))
            except OSError:
                pass
    return total


def _backlog(folder: Path) -> int:
    """Events in the server's event journal, accepted and not yet applied to the store."""
    path = folder / "inbox" / "events.db"
    if not path.exists():
        return 0
    import sqlite3

    db = sqlite3.connect(path, timeout=30)
    try:
        return int(db.execute("SELECT coalesce(sum(events), 0) FROM entries").fetchone()[0])
    finally:
        db.close()


def _drained(
    folder: Path, accepted: int, seconds_run: float, limit: float = 300.0
) -> dict[str, Any]:
    """After a measurement: the journal's backlog when the load stopped, the seconds the
    applier took to empty it, and the events applied per second over load and drain."""
    left = _backlog(folder)
    started = time.monotonic()
    while _backlog(folder) and time.monotonic() - started < limit:
        time.sleep(0.2)
    drain = time.monotonic() - started if left else 0.0
    return {
        "backlog_at_end": left,
        "drain_seconds": round(drain, 1),
        "left_after_drain": _backlog(folder),
        "applied_per_second": round(accepted / (seconds_run + drain), 1) if accepted else None,
    }


def _wrk(
    server: Server, path: str, key: str, contacts: int, batch: int, seconds: int, tag: str
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            LUA % {"prefix": tag, "contacts": contacts, "batch": batch, "key": key, "path": path}
        )
        script = f.name
    cpu_before = _cpu_seconds(server.proc.pid)
    engine_before = _children_cpu_seconds(server.proc.pid, "winback-engine")
    applier_before = _children_cpu_seconds(server.proc.pid, "winback-applier")
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{THREADS}",
                f"-c{CONNECTIONS}",
                f"-d{seconds}s",
                "--timeout",
                "30s",
                "-s",
                script,
                server.url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    cpu = _cpu_seconds(server.proc.pid) - cpu_before
    engine_cpu = _children_cpu_seconds(server.proc.pid, "winback-engine") - engine_before
    applier_cpu = _children_cpu_seconds(server.proc.pid, "winback-applier") - applier_before
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    raw = json.loads(line[4:])
    seconds_run = raw["duration_us"] / 1e6
    ok = sum(n for code, n in raw["codes"].items() if code.startswith("2"))
    per = batch or 1
    drained = _drained(server.folder, ok * per, seconds_run) if path != NOOP_PATH else {}
    if drained and ok:
        # CPU per event over the load and the drain, of the server (acceptance) and of the
        # applier (its child process, or a thread of the server).
        all_cpu = _cpu_seconds(server.proc.pid) - cpu_before
        all_applier = _children_cpu_seconds(server.proc.pid, "winback-applier") - applier_before
        drained["server_cpu_us_per_event_applied"] = round(all_cpu * 1e6 / (ok * per), 1)
        drained["applier_cpu_us_per_event_applied"] = round(all_applier * 1e6 / (ok * per), 1)
    return {
        **drained,
        "requests": raw["requests"],
        "statuses": raw["codes"],
        # 503 with Retry-After is the documented answer of a full journal (the client sends
        # again later): counted apart from errors, which are every other failure.
        "refused_503": raw["codes"].get("503", 0),
        "errors": raw["requests"] - ok - raw["codes"].get("503", 0) + raw["socket_errors"],
        "requests_per_second": round(ok / seconds_run, 1),
        "events_per_second": round(ok * per / seconds_run, 1) if path != NOOP_PATH else None,
        "p50_ms": round(raw["p50_us"] / 1000, 1),
        "p99_ms": round(raw["p99_us"] / 1000, 1),
        "max_ms": round(raw["max_us"] / 1000, 1),
        "seconds": round(seconds_run, 2),
        # The server's own CPU time (all threads, engine included) per answered request:
        # a figure that depends less on what else the machine runs than the rates do.
        "server_cpu_ms_per_request": round(cpu * 1000 / ok, 3) if ok else None,
        "server_cpu_share": round(cpu / seconds_run, 2),
        # The engine's and the applier's child processes (not counted above).
        "engine_process_cpu_share": round(engine_cpu / seconds_run, 2),
        "applier_process_cpu_share": round(applier_cpu / seconds_run, 2),
    }


def _stored(url: str) -> tuple[float, int]:
    """The ``page_view`` events in the store (every event the load sends is one), and the
    monotonic time of the read's middle."""
    from winback.store.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            began = time.monotonic()
            n = conn.execute(text("SELECT count(*) FROM events WHERE type = 'page_view'")).scalar()
            return (began + time.monotonic()) / 2, int(n or 0)
    finally:
        engine.dispose()


def _post(
    conn: http.client.HTTPConnection, port: int, path: str, body: str, headers: dict[str, str]
) -> tuple[http.client.HTTPConnection, str]:
    """POST over a keep-alive connection; the connection to use next (a new one after a
    failure) and the status, or the failure's name."""
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        response.read()
        return conn, str(response.status)
    except OSError as exc:
        conn.close()
        return http.client.HTTPConnection("127.0.0.1", port, timeout=60), type(exc).__name__


class PacedClient(threading.Thread):
    """One keep-alive connection sending batches on a fixed schedule: request ``i`` of
    connection ``k`` is due at ``start + (i * connections + k) / rate``. A late request is sent
    at once (the schedule never slips), and its latency counts from when it was due."""

    def __init__(
        self,
        k: int,
        port: int,
        key: str,
        contacts: int,
        rate: float,
        start: float,
        end: float,
        done: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.k, self.port, self.contacts = k, port, contacts
        self.rate, self.start_at, self.end_at = rate, start, end
        self.done = done
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.late = 0

    def _body(self, i: int) -> str:
        cid = (i * 7919 + self.k * 104729) % self.contacts
        events = [
            f'{{"customer_id":"c{(cid + j * 1009) % self.contacts + 1}","type":"page_view",'
            f'"event_id":"p{self.start_at:.0f}-{self.k}-{i}-{j}"}}'
            for j in range(BATCH)
        ]
        return '{"events":[' + ",".join(events) + "]}"

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = 0
        while True:
            due = self.start_at + (i * CONNECTIONS + self.k) / self.rate
            if due >= self.end_at or (self.done is not None and self.done.is_set()):
                break
            body = self._body(i)
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                self.late += 1
            conn, status = _post(conn, self.port, "/api/v1/events/batch", body, self.headers)
            self.latencies.append(time.monotonic() - due)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            i += 1
        conn.close()


def _pass_watch(server: Server, done: threading.Event, stop: threading.Event) -> None:
    """Set ``done`` once the server's engine has ended its first pass (``GET /healthz``)."""
    while not stop.wait(0.5):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/healthz")
            body = json.loads(conn.getresponse().read())
            conn.close()
        except (OSError, ValueError):
            continue
        engine = body.get("engine", {})
        if engine.get("passes", 0) + engine.get("failures", 0) >= 1:
            done.set()
            return


def _paced(
    server: Server,
    url: str,
    key: str,
    contacts: int,
    seconds: float,
    *,
    whole_pass: bool = False,
) -> dict[str, Any]:
    """Batches offered at ``PACED_RATE`` events/s for ``seconds`` (``whole_pass``: until the
    engine's first pass ends, at most ``seconds``): offered, accepted and stored events/s in
    the window, the journal's backlog at its start and end, and latencies."""
    requests_per_second = PACED_RATE / BATCH
    done = threading.Event() if whole_pass else None
    watch_stop = threading.Event()
    cpu_before = _cpu_seconds(server.proc.pid)
    engine_before = _children_cpu_seconds(server.proc.pid, "winback-engine")
    applier_before = _children_cpu_seconds(server.proc.pid, "winback-applier")
    client_before = time.process_time()
    backlog_start = _backlog(server.folder)
    read_start, stored_start = _stored(url)
    start = time.monotonic() + 0.05
    clients = [
        PacedClient(
            k, server.port, key, contacts, requests_per_second, start, start + seconds, done
        )
        for k in range(CONNECTIONS)
    ]
    watcher = None
    if done is not None:
        watcher = threading.Thread(target=_pass_watch, args=(server, done, watch_stop), daemon=True)
        watcher.start()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    window = time.monotonic() - start
    watch_stop.set()
    if watcher is not None:
        watcher.join()
    read_end, stored_end = _stored(url)
    backlog_end = _backlog(server.folder)
    cpu = _cpu_seconds(server.proc.pid) - cpu_before
    engine_cpu = _children_cpu_seconds(server.proc.pid, "winback-engine") - engine_before
    applier_cpu = _children_cpu_seconds(server.proc.pid, "winback-applier") - applier_before
    client_cpu = time.process_time() - client_before
    statuses: dict[str, int] = {}
    for c in clients:
        for s, n in c.statuses.items():
            statuses[s] = statuses.get(s, 0) + n
    ordered = sorted(x for c in clients for x in c.latencies)
    sent = len(ordered)
    ok = sum(n for s, n in statuses.items() if s.startswith("2"))
    refused = statuses.get("503", 0)

    def pct(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(sent - 1, int(p * sent))] * 1000, 1)

    return {
        "offered_rate": PACED_RATE,
        "requests": sent,
        "statuses": statuses,
        "refused_503": refused,
        "errors": sent - ok - refused,
        "late_requests": sum(c.late for c in clients),
        "offered_per_second": round(sent * BATCH / window, 1),
        "accepted_per_second": round(ok * BATCH / window, 1),
        "stored_in_window": stored_end - stored_start,
        "stored_per_second": round((stored_end - stored_start) / (read_end - read_start), 1),
        "backlog_at_start": backlog_start,
        "backlog_at_end": backlog_end,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        "seconds": round(window, 2),
        "ended_with_the_pass": bool(done is not None and done.is_set()),
        "server_cpu_share": round(cpu / window, 2),
        "engine_process_cpu_share": round(engine_cpu / window, 2),
        "applier_process_cpu_share": round(applier_cpu / window, 2),
        # The benchmark's own process (this client), which shares the machine's cores.
        "client_cpu_share": round(client_cpu / window, 2),
    }


class Unsubscriber(threading.Thread):
    """One-click unsubscribes at a steady rate over one keep-alive connection."""

    def __init__(self, port: int, paths: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.paths, self.rate = port, paths, rate
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = "List-Unsubscribe=One-Click"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        start = time.monotonic()
        for i, path in enumerate(self.paths):
            due = start + i / self.rate
            if self.stop.wait(max(0.0, due - time.monotonic())):
                break
            began = time.perf_counter()
            conn, status = _post(conn, self.port, path, body, headers)
            self.latencies.append(time.perf_counter() - began)
            self.statuses[status] = self.statuses.get(status, 0) + 1
        conn.close()

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)

        return {
            "sent": len(ordered),
            "statuses": self.statuses,
            "errors": sum(n for s, n in self.statuses.items() if s != "200"),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        }


def _progress(url: str) -> dict[str, int]:
    """How far the engine's pass is: flow entries, and the outbox by status."""
    from winback.store.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            entries = int(conn.execute(text("SELECT count(*) FROM flow_entries")).scalar() or 0)
            rows = conn.execute(
                text("SELECT status, count(*) FROM outbox WHERE flow IS NOT NULL GROUP BY status")
            ).all()
    finally:
        engine.dispose()
    return {"entries": entries, **{f"outbox_{s}": int(n) for s, n in rows}}


# -- one database ----------------------------------------------------------------------------


def _one_database(kind: str, n: int, seconds: int, cluster: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-service-{kind}-"))
    unsubscribable = max(200, int(UNSUB_RATE * (2 * seconds + 10)))
    try:
        envs: dict[str, dict[str, str]] = {}
        urls: dict[str, str] = {}
        if kind == "sqlite":
            key, paths = _build(work / "base", n, unsubscribable, dict(AROUND_THE_CLOCK))
            for copy in ("idle", "busy", "paced"):
                shutil.copytree(work / "base", work / copy)
                envs[copy] = dict(AROUND_THE_CLOCK)
                urls[copy] = f"sqlite+pysqlite:///{work / copy / 'winback.db'}"
        else:
            base_url = cluster.create_database("bench_service_base")
            key, paths = _build(
                work / "base",
                n,
                unsubscribable,
                {"WINBACK_DATABASE_URL": base_url} | AROUND_THE_CLOCK,
            )
            for copy in ("idle", "busy", "paced"):
                urls[copy] = cluster.create_database(
                    f"bench_service_{copy}", template="bench_service_base"
                )
                envs[copy] = {"WINBACK_DATABASE_URL": urls[copy]} | AROUND_THE_CLOCK
                shutil.copytree(work / "base", work / copy)
        figures: dict[str, Any] = {"contacts": n}

        server = Server(work / "idle", engine=False, environ=envs["idle"])
        try:
            figures["noop"] = _wrk(server, NOOP_PATH, key, n, 0, seconds, "noop")
            figures["single"] = _wrk(server, "/api/v1/events", key, n, 0, seconds, "s")
            figures["batch"] = _wrk(server, "/api/v1/events/batch", key, n, BATCH, seconds, "b")
            figures["paced"] = _paced(server, urls["idle"], key, n, max(seconds, PACED_SECONDS))
        finally:
            server.stop()

        server = Server(work / "busy", engine=True, environ=envs["busy"])
        unsub = Unsubscriber(server.port, paths, UNSUB_RATE)
        try:
            time.sleep(1.0)  # the pass begins with the segment refresh
            unsub.start()
            before = _progress(urls["busy"])
            figures["engine_single"] = _wrk(server, "/api/v1/events", key, n, 0, seconds, "es")
            middle = _progress(urls["busy"])
            figures["engine_batch"] = _wrk(
                server, "/api/v1/events/batch", key, n, BATCH, seconds, "eb"
            )
            after = _progress(urls["busy"])
            unsub.stop.set()
            unsub.join(60)
        finally:
            server.stop()
        figures["unsubscribe"] = unsub.figures()

        server = Server(work / "paced", engine=True, environ=envs["paced"])
        try:
            time.sleep(1.0)  # as in (c): the pass has begun
            paced_before = _progress(urls["paced"])
            figures["engine_paced"] = _paced(
                server, urls["paced"], key, n, PASS_SECONDS, whole_pass=True
            )
            paced_after = _progress(urls["paced"])
        finally:
            server.stop()
        figures["engine_paced"]["engine_progress"] = {"start": paced_before, "end": paced_after}
        figures["engine_paced"]["sustained"] = _sustained(figures["engine_paced"])
        figures["paced"]["sustained"] = _sustained(figures["paced"])
        figures["engine_progress"] = {"start": before, "middle": middle, "end": after}
        figures["engine_busy_throughout"] = (
            before != middle != after
            and after.get("outbox_pending", 0) + after.get("outbox_sending", 0) > 0
        ) or after.get("entries", 0) < n // 2
        figures["ratios"] = _ratios(figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if cluster is not None:
            for name in (
                "bench_service_idle",
                "bench_service_busy",
                "bench_service_paced",
                "bench_service_base",
            ):
                cluster.drop_database(name)
    return figures


def _sustained(m: dict[str, Any]) -> bool:
    """The offered rate was taken in and stored as it came: every batch accepted, the store
    gaining at least 95% of the offered rate in the window, and the journal's backlog not
    grown by more than one second of load."""
    return bool(
        m["refused_503"] == 0
        and m["errors"] == 0
        and m["stored_per_second"] >= 0.95 * m["offered_per_second"]
        and m["backlog_at_end"] - m["backlog_at_start"] <= m["offered_rate"]
    )


def _ratios(f: dict[str, Any]) -> dict[str, float]:
    def r(a: float | None, b: float | None) -> float:
        return round(a / b, 3) if a and b else 0.0

    ceiling = f["noop"]["requests_per_second"]
    return {
        "single_vs_noop": r(f["single"]["requests_per_second"], ceiling),
        "batch_requests_vs_noop": r(f["batch"]["requests_per_second"], ceiling),
        "engine_single_vs_noop": r(f["engine_single"]["requests_per_second"], ceiling),
        "engine_single_vs_idle": r(
            f["engine_single"]["events_per_second"], f["single"]["events_per_second"]
        ),
        "engine_batch_vs_idle": r(
            f["engine_batch"]["events_per_second"], f["batch"]["events_per_second"]
        ),
        "engine_paced_stored_vs_offered": r(
            f["engine_paced"]["stored_per_second"], f["engine_paced"]["offered_per_second"]
        ),
    }


def run(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench_service needs wrk (Debian: apt-get install wrk; make system-deps)")
    n = int(os.environ.get("BENCH_SERVICE_CONTACTS", 10_000 if quick else 100_000))
    seconds = int(os.environ.get("BENCH_SERVICE_SECONDS", 3 if quick else 10))
    dbs = os.environ.get("BENCH_SERVICE_DBS", os.environ.get("BENCH_SERVICE_DB", "sqlite,postgres"))
    figures: dict[str, Any] = {
        "connections": CONNECTIONS,
        "batch": BATCH,
        "seconds_each": seconds,
        "unsubscribe_rate": UNSUB_RATE,
        "paced_rate": PACED_RATE,
    }
    load_before = os.getloadavg()
    for kind in dbs.split(","):
        cluster = None
        if kind == "postgres":
            from tests.pgcluster import PostgresCluster

            cluster = PostgresCluster().start()
        try:
            figures[kind] = _one_database(kind, n, seconds, cluster)
        finally:
            if cluster is not None:
                cluster.stop()
        _print(kind, figures[kind])
    figures["target"] = (
        "SQLite, 4 clients, during a 100,000-contact first pass: >= 2,000 single events/s, "
        ">= 20,000 batched events/s, >= 50% of the no-op ceiling, one-click unsubscribe "
        "p99 < 500 ms, 0 errors"
    )
    # The machine may be shared: the 1/5/15-minute load averages before and after.
    figures["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    return figures


def _print(kind: str, f: dict[str, Any]) -> None:
    ceiling = f["noop"]["requests_per_second"]
    print(f"{kind}: {f['contacts']:,} contacts, {CONNECTIONS} connections", flush=True)
    print(
        f"  {'measurement':<28} {'req/s':>9} {'events/s':>10} {'stored/s':>9} {'p99 ms':>8} "
        f"{'errors':>7} {'503':>6} {'vs no-op':>9} {'vs no engine':>13} {'cpu ms/req':>11}"
    )
    rows = [
        ("no-op (ceiling)", "noop", None),
        ("single, no engine", "single", None),
        ("batch of 100, no engine", "batch", None),
        ("single, engine pass", "engine_single", "single"),
        ("batch of 100, engine pass", "engine_batch", "batch"),
    ]
    for label, name, idle in rows:
        m = f[name]
        events = f"{m['events_per_second']:,.0f}" if m["events_per_second"] is not None else "-"
        vs_idle = (
            f"{m['events_per_second'] / f[idle]['events_per_second']:.0%}"
            if idle and f[idle]["events_per_second"]
            else "-"
        )
        stored = f"{m['applied_per_second']:,.0f}" if m.get("applied_per_second") else "-"
        print(
            f"  {label:<28} {m['requests_per_second']:>9,.0f} {events:>10} {stored:>9} "
            f"{m['p99_ms']:>8} {m['errors']:>7} {m.get('refused_503', 0):>6} "
            f"{m['requests_per_second'] / ceiling:>9.0%} {vs_idle:>13} "
            f"{m['server_cpu_ms_per_request'] or 0:>11.3f}"
        )
    print(
        f"  {'offered load (paced)':<28} {'offered/s':>10} {'accepted/s':>11} {'stored/s':>9} "
        f"{'backlog start':>14} {'backlog end':>12} {'503':>6} {'errors':>7} {'p99 ms':>8} "
        f"{'sustained':>10}"
    )
    for label, name in (
        (f"batch, {PACED_RATE:,.0f}/s, no engine", "paced"),
        (f"batch, {PACED_RATE:,.0f}/s, engine pass", "engine_paced"),
    ):
        m = f[name]
        print(
            f"  {label:<28} {m['offered_per_second']:>10,.0f} {m['accepted_per_second']:>11,.0f} "
            f"{m['stored_per_second']:>9,.0f} {m['backlog_at_start']:>14,} "
            f"{m['backlog_at_end']:>12,} {m['refused_503']:>6} {m['errors']:>7} "
            f"{m['p99_ms']:>8} {'yes' if m['sustained'] else 'no':>10}"
        )
    u = f["unsubscribe"]
    print(
        f"  one-click unsubscribes during the pass: {u['sent']} sent, p50 {u['p50_ms']} ms, "
        f"p99 {u['p99_ms']} ms, max {u['max_ms']} ms, errors {u['errors']} {u['statuses']}"
    )
    print(
        f"  engine progress: {f['engine_progress']} (busy throughout: {f['engine_busy_throughout']})"
    )


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), engine=len(sys.argv) > 4 and sys.argv[4] == "engine")
    else:
        raise SystemExit("usage: python -m benchmarks service (or make bench BENCH=service)")
