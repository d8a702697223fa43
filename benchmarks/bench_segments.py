"""Refresh of the 8 default segments over 1,000,000 contacts and 10,000,000 events (SQLite).

Setup (untimed) builds the shop in SQL: contacts with per-contact dormancy, 10 events each
(opens with 10% machine opens, clicks, site visits), 3 orders for 60% of them, the maintained
columns computed from those rows, and the reactivation tag on 1% of contacts.

Timed, each compared with the raw SQL lower bound measured in the same run (the same set
updates, written by hand for these 8 segments as plain SQL: exits, entries, member counts).
The raw side is the cheapest correct SQL a person would write knowing these 8 segments and
the data: on the first refresh membership is empty, so it is one ``INSERT ... SELECT`` per
segment (no exit statement, no "already a member" test); a segment made of other segments
is written as their predicates (not as lookups of their membership); on SQLite the column
tests are written ``+c.col`` (a scan, not a combination of indexes) and it runs with
the connection settings of winback's refresh (page cache ``segments_cache_mb``, foreign key
checks off: every stint is built from ids read in the same transaction). It writes exactly
the stints winback writes (the run asserts equal entries and exits per segment). Raw SQL
with membership lookups and foreign key checks on the first refresh would be slower than
winback: not a lower bound.

1. the first full refresh at T (raw, ours, raw, ours; each side's faster run counts);
2. an incremental refresh one day later, after a day of activity (1% of contacts visited the
   site, 0.2% bought, 0.05% were tagged);
3. for reference, a forced full refresh at the same later instant.

Targets: refresh under 10 s on SQLite and within 3x of the raw bound.

Environment overrides (for measuring at a reduced size on a shared machine):
``WINBACK_BENCH_SEGMENTS_CONTACTS`` (default 1,000,000; 20,000 with ``--quick``) and
``WINBACK_BENCH_SEGMENTS_EVENTS_PER_CONTACT`` (default 10).

The raw SQL is assembled from constants and integer ids of this file only (hence S608 off).
"""

# ruff: noqa: S608

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import winback
from winback.clock import FixedClock
from winback.store.types import sqlite_text
from winback.workspace import Workspace

T = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
T1 = T + timedelta(days=1)
DAYS = 90
REACT = "customer_not-active_after-reactivation"
EPOCH_T = int(T.timestamp())


def _size(quick: bool) -> tuple[int, int]:
    contacts = int(
        os.environ.get("WINBACK_BENCH_SEGMENTS_CONTACTS", "20000" if quick else "1000000")
    )
    return contacts, int(os.environ.get("WINBACK_BENCH_SEGMENTS_EVENTS_PER_CONTACT", "10"))


def _pg(ws: Workspace) -> bool:
    return ws.engine.dialect.name == "postgresql"


def _t(ws: Workspace, value: datetime) -> Any:
    """An instant as the driver wants it for raw SQL."""
    return value if _pg(ws) else sqlite_text(value)


_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def _x(conn: Any, ws: Workspace, sql: str, params: Any = None) -> Any:
    """Run raw SQL written with ``?`` / ``:name`` placeholders on either database."""
    options: dict[str, Any] = {"preserve_rowcount": True}
    if params is None:
        options["no_parameters"] = True  # percent signs are literal then
    elif _pg(ws):
        sql = _NAMED.sub(r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))
    return conn.exec_driver_sql(
        sql, params if params is not None else (), execution_options=options
    )


def _h(expr: str, mult: int) -> str:
    """A deterministic pseudo-random non-negative integer from an integer expression."""
    return f"((({expr}) * {mult}) % 4294967291)"


def _ts(seconds_expr: str) -> str:
    return f"(strftime('%Y-%m-%d %H:%M:%S', {seconds_expr}, 'unixepoch') || '.000000')"


def build_sqlite(ws: Workspace, contacts: int, events_per_contact: int) -> dict[str, int]:
    n, e = contacts, contacts * events_per_contact
    recency = f"({_h('(k / 3 + 1)', 2654435761)} % 300)"  # a customer's dormancy, days
    with ws.engine.begin() as conn:
        x = conn.exec_driver_sql
        x("DROP INDEX IF EXISTS ix_events_contact_type_at")
        x("DROP INDEX IF EXISTS ix_events_type_at")
        x(
            f"""WITH RECURSIVE seq(c) AS (SELECT 1 UNION ALL SELECT c + 1 FROM seq WHERE c < {n})
            INSERT INTO contacts (id, customer_id, email, attributes, email_consent,
                orders_count, revenue_total, created_at, updated_at)
            SELECT c, 'c' || c, 'c' || c || '@example.com', '{{}}',
                ({_h("c", 40503)} % 10) < 7, 0, 0,
                {_ts(f"{EPOCH_T} - 800 * 86400")}, {_ts(f"{EPOCH_T} - 3600")}
            FROM seq"""
        )
        x(
            f"""WITH RECURSIVE seq(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM seq WHERE k < {e - 1})
            INSERT INTO events (event_key, contact_id, type, occurred_at, machine)
            SELECT printf('e%010d', k), c,
                CASE WHEN r < 25 THEN 'email_sent' WHEN r < 45 THEN 'email_opened'
                     WHEN r < 52 THEN 'email_clicked' WHEN r < 80 THEN 'page_view'
                     WHEN r < 93 THEN 'product_view' ELSE 'cart_add' END,
                {_ts(f"{EPOCH_T} - rec * 86400 - ({_h('k', 97)} % (365 * 86400)) - 60")},
                CASE WHEN r >= 25 AND r < 45 AND ({_h("k", 7919)} % 10) = 0 THEN 1 ELSE 0 END
            FROM (SELECT k, k / {events_per_contact} + 1 AS c,
                         ({_h("k", 2246822519)} % 100) AS r,
                         ({_h(f"(k / {events_per_contact} + 1)", 2654435761)} % 300) AS rec
                  FROM seq)"""
        )
        x("CREATE INDEX ix_events_contact_type_at ON events (contact_id, type, occurred_at)")
        x("CREATE INDEX ix_events_type_at ON events (type, occurred_at)")
        x(
            f"""WITH RECURSIVE seq(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM seq WHERE k < {3 * n - 1})
            INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency)
            SELECT printf('o%010d', k), c,
                {_ts(f"{EPOCH_T} - {recency} * 86400 - ({_h('k', 31)} % (400 * 86400)) - 60")},
                10 + ({_h("k", 131)} % 90), 'USD'
            FROM (SELECT k, k / 3 + 1 AS c FROM seq) WHERE ({_h("c", 3266489917)} % 10) < 6"""
        )
        x(
            """UPDATE contacts SET last_email_opened = a.lo, last_email_link_clicked = a.lc,
                last_seen = a.ls
            FROM (SELECT contact_id,
                    max(CASE WHEN type = 'email_opened' AND machine = 0 THEN occurred_at END) lo,
                    max(CASE WHEN type = 'email_clicked' AND machine = 0 THEN occurred_at END) lc,
                    max(CASE WHEN type IN ('page_view', 'product_view', 'cart_add')
                             AND machine = 0 THEN occurred_at END) ls
                  FROM events GROUP BY contact_id) a
            WHERE contacts.id = a.contact_id"""
        )
        x(
            """UPDATE contacts SET first_purchase_at = o.f, last_purchase_at = o.l,
                orders_count = o.n, revenue_total = o.s
            FROM (SELECT contact_id, min(ordered_at) f, max(ordered_at) l, count(*) n,
                         sum(amount) s FROM orders GROUP BY contact_id) o
            WHERE contacts.id = o.contact_id"""
        )
        at = sqlite_text(T - timedelta(days=3))
        x(
            "INSERT INTO contact_tags (contact_id, tag, added_at, added_by) "
            "SELECT id, ?, ?, 'bench' FROM contacts WHERE id % 100 = 0",
            (REACT, at),
        )
        x(
            "INSERT INTO tag_history (contact_id, tag, action, at, source) "
            "SELECT id, ?, 'added', ?, 'bench' FROM contacts WHERE id % 100 = 0",
            (REACT, at),
        )
        counts = {
            name: int(x(f"SELECT count(*) FROM {name}").scalar_one())
            for name in ("contacts", "events", "orders")
        }
    with ws.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    return counts


def build_postgres(ws: Workspace, contacts: int, events_per_contact: int) -> dict[str, int]:
    """The same shop as :func:`build_sqlite`, generated with ``generate_series``."""
    n, epc = contacts, events_per_contact

    def h(expr: str, mult: int) -> str:
        return f"(((({expr}))::bigint * {mult}) % 4294967291)"

    def ts(seconds_expr: str) -> str:
        return f"to_timestamp({seconds_expr})"

    with ws.engine.begin() as conn:

        def x(sql: str) -> Any:
            return _x(conn, ws, sql)

        x("DROP INDEX IF EXISTS ix_events_contact_type_at")
        x("DROP INDEX IF EXISTS ix_events_type_at")
        x(
            f"""INSERT INTO contacts (id, customer_id, email, attributes, email_consent,
                orders_count, revenue_total, created_at, updated_at)
            SELECT c, 'c' || c, 'c' || c || '@example.com', '{{}}'::jsonb,
                ({h("c", 40503)} % 10) < 7, 0, 0,
                {ts(f"{EPOCH_T} - 800 * 86400")}, {ts(f"{EPOCH_T} - 3600")}
            FROM generate_series(1, {n}) AS c"""
        )
        x(f"SELECT setval(pg_get_serial_sequence('contacts', 'id'), {n})")
        x(
            f"""INSERT INTO events (event_key, contact_id, type, occurred_at, machine)
            SELECT 'e' || lpad(k::text, 10, '0'), c,
                CASE WHEN r < 25 THEN 'email_sent' WHEN r < 45 THEN 'email_opened'
                     WHEN r < 52 THEN 'email_clicked' WHEN r < 80 THEN 'page_view'
                     WHEN r < 93 THEN 'product_view' ELSE 'cart_add' END,
                {ts(f"{EPOCH_T} - rec * 86400 - ({h('k', 97)} % (365 * 86400)) - 60")},
                (r >= 25 AND r < 45 AND ({h("k", 7919)} % 10) = 0)
            FROM (SELECT k, k / {epc} + 1 AS c, ({h("k", 2246822519)} % 100) AS r,
                         ({h(f"k / {epc} + 1", 2654435761)} % 300) AS rec
                  FROM generate_series(0, {n * epc - 1}) AS k) AS s"""
        )
        x("CREATE INDEX ix_events_contact_type_at ON events (contact_id, type, occurred_at)")
        x("CREATE INDEX ix_events_type_at ON events (type, occurred_at)")
        x(
            f"""INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency)
            SELECT 'o' || lpad(k::text, 10, '0'), c,
                {ts(f"{EPOCH_T} - ({h('c', 2654435761)} % 300) * 86400 - ({h('k', 31)} % (400 * 86400)) - 60")},
                10 + ({h("k", 131)} % 90), 'USD'
            FROM (SELECT k, k / 3 + 1 AS c FROM generate_series(0, {3 * n - 1}) AS k) AS s
            WHERE ({h("c", 3266489917)} % 10) < 6"""
        )
        x(
            """UPDATE contacts SET last_email_opened = a.lo, last_email_link_clicked = a.lc,
                last_seen = a.ls
            FROM (SELECT contact_id,
                    max(occurred_at) FILTER (WHERE type = 'email_opened' AND NOT machine) lo,
                    max(occurred_at) FILTER (WHERE type = 'email_clicked' AND NOT machine) lc,
                    max(occurred_at) FILTER (WHERE type IN ('page_view', 'product_view',
                        'cart_add') AND NOT machine) ls
                  FROM events GROUP BY contact_id) a
            WHERE contacts.id = a.contact_id"""
        )
        x(
            """UPDATE contacts SET first_purchase_at = o.f, last_purchase_at = o.l,
                orders_count = o.n, revenue_total = o.s
            FROM (SELECT contact_id, min(ordered_at) f, max(ordered_at) l, count(*) n,
                         sum(amount) s FROM orders GROUP BY contact_id) o
            WHERE contacts.id = o.contact_id"""
        )
        at = T - timedelta(days=3)
        _x(
            conn,
            ws,
            "INSERT INTO contact_tags (contact_id, tag, added_at, added_by) "
            "SELECT id, ?, ?, 'bench' FROM contacts WHERE id % 100 = 0",
            (REACT, at),
        )
        _x(
            conn,
            ws,
            "INSERT INTO tag_history (contact_id, tag, action, at, source) "
            "SELECT id, ?, 'added', ?, 'bench' FROM contacts WHERE id % 100 = 0",
            (REACT, at),
        )
        counts = {
            name: int(x(f"SELECT count(*) FROM {name}").scalar_one())
            for name in ("contacts", "events", "orders")
        }
    with ws.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    return counts


def a_day_of_activity(ws: Workspace, contacts: int) -> None:
    """1% of contacts visit the site, 0.2% buy, 0.05% are tagged, during the next day."""
    visit, buy, tag = (_t(ws, T1 - timedelta(hours=h)) for h in (5, 3, 2))
    with ws.engine.begin() as conn:

        def x(sql: str, params: Any) -> None:
            _x(conn, ws, sql, params)

        x(
            "INSERT INTO events (event_key, contact_id, type, occurred_at, machine) "
            "SELECT 'd' || id, id, 'page_view', ?, ? FROM contacts WHERE id % 100 = 7",
            (visit, False),
        )
        x("UPDATE contacts SET last_seen = ?, updated_at = ? WHERE id % 100 = 7", (visit, visit))
        x(
            "INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency) "
            "SELECT 'd' || id, id, ?, 25, 'USD' FROM contacts WHERE id % 500 = 11",
            (buy,),
        )
        x(
            "UPDATE contacts SET last_purchase_at = ?, first_purchase_at = "
            "coalesce(first_purchase_at, ?), orders_count = orders_count + 1, "
            "revenue_total = revenue_total + 25, updated_at = ? WHERE id % 500 = 11",
            (buy, buy, buy),
        )
        x(
            "INSERT INTO contact_tags (contact_id, tag, added_at, added_by) "
            "SELECT id, ?, ?, 'bench' FROM contacts WHERE id % 2000 = 13",
            (REACT, tag),
        )
        x(
            "INSERT INTO tag_history (contact_id, tag, action, at, source) "
            "SELECT id, ?, 'added', ?, 'bench' FROM contacts WHERE id % 2000 = 13",
            (REACT, tag),
        )


# -- the raw SQL lower bound: the same set updates, by hand ---------------------------------

OPEN = (
    "EXISTS (SELECT 1 FROM segment_membership m WHERE m.segment_id = {sid} "
    "AND m.contact_id = c.id AND m.exited_at IS NULL)"
)


def raw_segments(scan: str = "") -> list[tuple[str, str, list[str], list[str]]]:
    """(name, predicate over contacts c, time columns, dependency segments) in order.

    A segment made of other segments is written as their predicates (Customers Not Active =
    not active AND last purchase before the boundary): the cheapest form by hand, and the
    one winback itself uses within a pass (``winback.segments.refresh.inlinable``).
    ``scan="+"`` (SQLite) writes the columns ``+c.col`` so that the planner scans contacts
    instead of combining indexes for the broad "not active" tests (as winback does)."""
    engagement = ["last_email_opened", "last_email_link_clicked", "last_seen"]
    nau = (
        "("
        + " AND ".join(f"({scan}c.{col} < :b OR {scan}c.{col} IS NULL)" for col in engagement)
        + ")"
    )
    au = "(" + " OR ".join(f"{scan}c.{col} >= :b" for col in engagement) + ")"
    bought_before = f"{scan}c.last_purchase_at < :b"
    bought_within = f"{scan}c.last_purchase_at >= :b"
    tagged = "EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = :tag)"
    return [
        ("Active Users", au, engagement, []),
        ("Customers", f"{scan}c.first_purchase_at IS NOT NULL", [], []),
        ("Customers - No Purchase last 90d", bought_before, ["last_purchase_at"], []),
        ("Customers - Purchase last 90d", bought_within, ["last_purchase_at"], []),
        (
            "Customers Active",
            f"{au} AND {bought_within}",
            [],
            ["Active Users", "Customers - Purchase last 90d"],
        ),
        ("Not Active Users", nau, engagement, []),
        (
            "Customers Not Active",
            f"{nau} AND {bought_before}",
            [],
            ["Not Active Users", "Customers - No Purchase last 90d"],
        ),
        (
            "Customers Not Active after React",
            f"{nau} AND {bought_before} AND {tagged}",
            [],
            ["Customers Not Active"],
        ),
    ]


@contextmanager
def _raw_transaction(ws: Workspace) -> Iterator[Any]:
    """A transaction with the connection settings winback's refresh uses (on SQLite: the
    ``segments_cache_mb`` page cache, and foreign key checks off, since every stint is built
    from ids read in the same transaction)."""
    with ws.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        sqlite = not _pg(ws)
        if sqlite:
            driver.execute(f"PRAGMA cache_size={-1024 * ws.settings.segments_cache_mb}")
            driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
        finally:
            if sqlite:
                driver.execute("PRAGMA foreign_keys=ON")
                driver.execute("PRAGMA cache_size=-65536")


def raw_refresh(
    ws: Workspace, ids: dict[str, int], now: datetime, since: datetime | None
) -> dict[str, tuple[int, int]]:
    """Hand-written refresh; incremental (candidates) when ``since`` is given, else the first
    refresh (membership is empty: every match enters, nothing exits)."""
    params: dict[str, Any] = {
        "now": _t(ws, now),
        "b": _t(ws, now - timedelta(days=DAYS)),
        "tag": REACT,
    }
    if since is not None:
        params.update(t0=_t(ws, since), b0=_t(ws, since - timedelta(days=DAYS)))
    out: dict[str, tuple[int, int]] = {}
    with _raw_transaction(ws) as conn:

        def x(sql: str, p: Any) -> Any:
            return _x(conn, ws, sql, p)

        for name, pred, columns, deps in raw_segments("" if _pg(ws) else "+"):
            sid = ids[name]
            if since is None:
                exited = 0
                entered = x(
                    "INSERT INTO segment_membership (segment_id, contact_id, entered_at) "
                    f"SELECT {sid}, c.id, :now FROM contacts c WHERE {pred}",
                    params,
                ).rowcount
                x(
                    f"UPDATE segments SET refreshed_at = :now, member_count = :n WHERE id = {sid}",
                    {**params, "n": entered},
                )
                out[name] = (entered, exited)
                if _pg(ws) and entered >= 5000:
                    x("ANALYZE segment_membership", None)  # as winback does
                continue
            parts = ["SELECT id FROM contacts WHERE updated_at >= :t0"]
            parts += [f"SELECT id FROM contacts WHERE {c} >= :b0 AND {c} < :b" for c in columns]
            for dep in deps:
                parts.append(
                    f"SELECT contact_id FROM segment_membership WHERE segment_id = {ids[dep]} "
                    "AND entered_at > :t0"
                )
                parts.append(
                    f"SELECT contact_id FROM segment_membership WHERE segment_id = {ids[dep]} "
                    "AND exited_at > :t0"
                )
            if "contact_tags" in pred:
                parts.append("SELECT contact_id FROM tag_history WHERE tag = :tag AND at >= :t0")
            cand = " UNION ".join(parts)
            exited = x(
                f"UPDATE segment_membership SET exited_at = :now WHERE segment_id = {sid} "
                f"AND exited_at IS NULL AND segment_membership.contact_id IN ({cand}) "
                "AND NOT EXISTS (SELECT 1 FROM contacts c "
                f"WHERE c.id = segment_membership.contact_id AND {pred})",
                params,
            ).rowcount
            entered = x(
                "INSERT INTO segment_membership (segment_id, contact_id, entered_at) "
                f"SELECT {sid}, c.id, :now FROM contacts c WHERE {pred} AND c.id IN ({cand}) "
                f"AND NOT {OPEN.format(sid=sid)}",
                params,
            ).rowcount
            x(
                "UPDATE segments SET refreshed_at = :now, member_count = member_count + "
                f":d WHERE id = {sid}",
                {**params, "d": entered - exited},
            )
            out[name] = (entered, exited)
            if _pg(ws) and entered + exited >= 5000:
                x("ANALYZE segment_membership", None)  # as winback does: fresh statistics
    return out


def _undo(ws: Workspace, at: datetime, members: dict[str, int], ids: dict[str, int]) -> None:
    """Put membership back as it was before a refresh at ``at`` (untimed)."""
    with ws.engine.begin() as conn:
        _x(conn, ws, "DELETE FROM segment_membership WHERE entered_at = ?", (_t(ws, at),))
        _x(
            conn,
            ws,
            "UPDATE segment_membership SET exited_at = NULL WHERE exited_at = ?",
            (_t(ws, at),),
        )
        for name, count in members.items():
            _x(
                conn,
                ws,
                "UPDATE segments SET refreshed_at = ?, member_count = ? WHERE id = ?",
                (_t(ws, T), count, ids[name]),
            )


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def run(quick: bool) -> dict[str, Any]:
    """SQLite (the embedded default)."""
    contacts, epc = _size(quick)
    with tempfile.TemporaryDirectory(prefix="bench-segments-") as tmp:
        ws = winback.init(Path(tmp) / "ws", environ={}, clock=FixedClock(T))
        try:
            return _run(ws, contacts, epc, build_sqlite)
        finally:
            ws.close()


def run_postgres(quick: bool) -> dict[str, Any]:
    """PostgreSQL on a throwaway local cluster (the test suite's: fsync off)."""
    from tests.pgcluster import PostgresCluster

    contacts, epc = _size(quick)
    cluster = PostgresCluster().start()
    try:
        url = cluster.create_database("bench_segments")
        env = {"WINBACK_DATABASE_URL": url}
        with tempfile.TemporaryDirectory(prefix="bench-segments-pg-") as tmp:
            ws = winback.init(Path(tmp) / "ws", environ=env, clock=FixedClock(T))
            try:
                return _run(ws, contacts, epc, build_postgres)
            finally:
                ws.close()
    finally:
        cluster.stop()


def _run(ws: Workspace, contacts: int, epc: int, build: Any) -> dict[str, Any]:
    print(f"building {contacts:,} contacts and {epc * contacts:,} events ...", flush=True)
    sizes, build_s = _timed(lambda: build(ws, contacts, epc))
    print(f"  built in {build_s:.0f} s: {sizes}", flush=True)
    ws.segments.load()
    with ws.engine.connect() as conn:
        ids = {n: int(i) for n, i in conn.exec_driver_sql("SELECT name, id FROM segments")}

    def empty() -> None:
        with ws.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM segment_membership")
            conn.exec_driver_sql("UPDATE segments SET refreshed_at = NULL, member_count = NULL")

    # raw, ours, raw, ours: the first run writes into a fresh file, later ones reuse its
    # pages, and the load of a shared machine moves; each side counts its faster run.
    raw_full, raw_s1 = _timed(lambda: raw_refresh(ws, ids, T, None))
    empty()
    full, ours_s1 = _timed(lambda: ws.segments.refresh(T))
    members = {s.name: s.members for s in full.segments}
    assert {s.name: (s.entered, s.exited) for s in full.segments} == raw_full, "full differs"
    empty()
    raw_again, raw_s2 = _timed(lambda: raw_refresh(ws, ids, T, None))
    assert raw_again == raw_full
    empty()
    again, ours_s2 = _timed(lambda: ws.segments.refresh(T))
    assert {s.name: (s.entered, s.exited) for s in again.segments} == raw_full
    full_runs = {"ours": [round(ours_s1, 3), round(ours_s2, 3)]}
    full_runs["raw"] = [round(raw_s1, 3), round(raw_s2, 3)]
    full_s, raw_full_s = min(ours_s1, ours_s2), min(raw_s1, raw_s2)

    a_day_of_activity(ws, contacts)
    raw_inc, raw_inc_s = _timed(lambda: raw_refresh(ws, ids, T1, T))
    _undo(ws, T1, members, ids)
    inc, inc_s = _timed(lambda: ws.segments.refresh(T1))
    assert {s.mode for s in inc.segments} == {"incremental"}
    assert {s.name: (s.entered, s.exited) for s in inc.segments} == raw_inc, "incremental differs"
    _undo(ws, T1, members, ids)
    full_later, full_later_s = _timed(lambda: ws.segments.refresh(T1, full=True))
    assert {s.name: (s.entered, s.exited) for s in full_later.segments} == raw_inc

    figures = {
        "database": ws.engine.dialect.name,
        **sizes,
        "build_seconds": round(build_s, 1),
        "members": members,
        "changes_after_one_day": {s.name: [s.entered, s.exited] for s in inc.segments},
        "full_refresh_seconds": round(full_s, 3),
        "full_raw_sql_seconds": round(raw_full_s, 3),
        "full_ratio": round(full_s / raw_full_s, 2),
        "full_runs_seconds": full_runs,
        "incremental_refresh_seconds": round(inc_s, 3),
        "incremental_raw_sql_seconds": round(raw_inc_s, 3),
        "incremental_ratio": round(inc_s / raw_inc_s, 2),
        "forced_full_refresh_next_day_seconds": round(full_later_s, 3),
        "targets": {"refresh_seconds": 10, "ratio_to_raw": 3},
    }
    print(
        f"full refresh:        {full_s:7.2f} s   raw SQL {raw_full_s:7.2f} s   "
        f"ratio {figures['full_ratio']}",
        flush=True,
    )
    print(
        f"incremental (+1 day): {inc_s:6.3f} s   raw SQL {raw_inc_s:7.3f} s   "
        f"ratio {figures['incremental_ratio']}",
        flush=True,
    )
    print(f"forced full (+1 day): {full_later_s:6.2f} s", flush=True)
    return figures
