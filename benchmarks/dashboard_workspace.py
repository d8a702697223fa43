"""The dashboard benchmark's workspace: a shop of ``contacts`` customers (default 1,000,000)
with about 10 events each (opens, clicks, site visits over two years), orders for 65 % of
them (about 2.7 per contact over their lifetime), consent with its log, tags, the shipped
segments refreshed, the reference flow run for two weeks with its messages, and an analysis
(RFM, P(alive), CLV) of the day.

Built once and kept (``build.json`` in the folder records what was built): a later run with
the same version and size reuses it. The bulk rows are written with plain SQL in one
transaction per table (``INSERT ... SELECT`` over a recursive sequence, deterministic
pseudo-random values from integer hashes), the secondary indexes of ``events`` dropped for
the load and created again after it; then the product computes what it computes itself:
segment refresh and the flow's passes (``Flows.tick``), the analysis (``Analytics.analyze``).

Delivery is not run: rendering and sending half a million emails would measure the delivery
worker, not the dashboard. The messages the flow queued are marked sent by SQL (as the worker
would record them), and a share of them opened, clicked and followed by an order, written
like the tracking links and the order import write them (events with the message id, the
contact's standard attributes moved forward through ``store.activity``'s columns).

The SQL is assembled from integers and constants of this file only (hence S608 off).
"""

# ruff: noqa: S608

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from winback.clock import FixedClock

if TYPE_CHECKING:
    from winback.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
#: Bumped when the builder writes a different shop: a kept workspace of another version is
#: built again.
VERSION = 1
MANIFEST = "build.json"
EVENTS_PER_CONTACT = 10
FLOW = "reactivation"
NAMES = (
    "Ada", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Kenji", "Lena", "Mateo", "Nora", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Yuki",
)  # fmt: skip
CITIES = ("Berlin", "Lyon", "Porto", "Leeds", "Turin", "Ghent", "Graz", "Malmö")
TAGS = (("newsletter", 30), ("vip", 2), ("wholesale", 1), ("gift-buyer", 8), ("returns", 4))


@dataclass(frozen=True)
class Built:
    """A built workspace: its folder, the instant its data ends at, and what it holds."""

    folder: Path
    now: datetime
    manifest: dict[str, Any]

    @property
    def database(self) -> Path:
        return self.folder / "winback.db"


def default_folder(contacts: int) -> Path:
    """``WINBACK_BENCH_DASHBOARD_DIR``, or ``benchmarks/work/dashboard-<contacts>`` (ignored
    by git)."""
    given = os.environ.get("WINBACK_BENCH_DASHBOARD_DIR")
    return Path(given) if given else ROOT / "benchmarks" / "work" / f"dashboard-{contacts}"


def ensure(contacts: int, folder: Path | None = None, say: Callable[[str], None] = print) -> Built:
    """The workspace of ``contacts`` customers in ``folder``: reused when its manifest has
    this version and size (migrated to the current schema), built otherwise."""
    import winback

    folder = folder or default_folder(contacts)
    manifest_file = folder / MANIFEST
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        if manifest.get("version") == VERSION and manifest.get("contacts") == contacts:
            now = datetime.fromisoformat(manifest["now"])
            ws = winback.open(folder, environ={}, clock=FixedClock(now))
            try:
                ws.upgrade()
                _keep_results(ws, now, say)
            finally:
                ws.close()
            say(f"reusing the workspace in {folder} (built {manifest['built_at']})")
            return Built(folder, now, manifest)
        say(f"{folder} holds another build ({manifest.get('version')}, "
            f"{manifest.get('contacts')} contacts): building again")  # fmt: skip
    if folder.exists():
        shutil.rmtree(folder)
    return build(contacts, folder, say)


def _keep_results(ws: Workspace, now: datetime, say: Callable[[str], None]) -> None:
    """The flows' results kept as ``winback serve``'s engine loop keeps them after a pass
    (the benchmark's server runs without the loop); only those missing or out of date."""
    from winback.results import snapshot

    computed = snapshot.refresh(ws.engine, ws.settings, now)
    if computed:
        say(f"  kept the results of {', '.join(computed)}")


def build(contacts: int, folder: Path, say: Callable[[str], None] = print) -> Built:
    import winback

    now = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    if now > datetime.now(UTC):
        now -= timedelta(days=1)
    steps: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str, since: float) -> float:
        steps[name] = round(time.perf_counter() - since, 1)
        say(f"  {name}: {steps[name]} s")
        return time.perf_counter()

    t = time.perf_counter()
    winback.init(folder, environ={}, shop_name="Bench shop").close()
    t = lap("init", t)
    events_budget = contacts * EVENTS_PER_CONTACT
    db = _bulk_connection(folder / "winback.db")
    try:
        _profiles(db, contacts, now)
        t = lap("profiles", t)
        _contacts(db, now)
        t = lap("contacts and consent", t)
        _orders(db, now)
        t = lap("orders", t)
        _events(db, now, int(events_budget * 0.99))
        t = lap("events", t)
        _maintained(db)
        t = lap("contact attributes", t)
        _tags(db, now)
        db.execute("DROP TABLE profile")
        db.commit()
        db.execute("ANALYZE")
        db.commit()
        t = lap("tags and ANALYZE", t)
    finally:
        db.close()

    start = now - timedelta(days=14)
    ws = winback.open(folder, environ={}, clock=FixedClock(start))
    try:
        ws.flows.add(FLOW, now=start)
        for day in (14, 10, 7):
            at = now - timedelta(days=day)
            ws.flows.tick(at)
            _deliver(ws.engine, at, events_budget)
        t = lap("reference flow: three passes over two weeks", t)
        ws.flows.tick(now)
        t = lap("segments and flows at the end", t)
    finally:
        ws.close()
    ws = winback.open(folder, environ={}, clock=FixedClock(now))
    try:
        ws.analytics.analyze()
        t = lap("analysis (RFM, BG/NBD, Gamma-Gamma, CLV, clusters)", t)
        _keep_results(ws, now, say)
        t = lap("flow results kept (as the engine loop keeps them)", t)
    finally:
        ws.close()
    db = _bulk_connection(folder / "winback.db")
    try:
        db.execute("ANALYZE")
        db.commit()
        counts = {
            table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in (
                "contacts", "orders", "events", "consent_log", "contact_tags", "tag_history",
                "segment_membership", "flow_entries", "outbox", "rfm_snapshots",
            )
        }  # fmt: skip
    finally:
        db.close()
    lap("ANALYZE", t)
    manifest = {
        "version": VERSION,
        "contacts": contacts,
        "now": now.isoformat(),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1),
        "steps_seconds": steps,
        "rows": counts,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    say(f"built {folder} in {manifest['build_seconds']} s: {counts}")
    return Built(folder, now, manifest)


# -- the bulk rows -----------------------------------------------------------------------------


def _bulk_connection(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    db.execute("PRAGMA temp_store=MEMORY")
    db.execute("BEGIN")
    return db


def _h(expr: str, mult: int) -> str:
    """A deterministic pseudo-random integer in [0, 4294967291) from an integer expression."""
    return f"((({expr}) * {mult} + 12345) % 4294967291)"


def _u(expr: str, mult: int) -> str:
    """A deterministic pseudo-random real in [0, 1)."""
    return f"({_h(expr, mult)} / 4294967291.0)"


def _ts(epoch_expr: str) -> str:
    """An instant (seconds since 1970) as the store keeps it on SQLite."""
    return f"(strftime('%Y-%m-%d %H:%M:%S', {epoch_expr}, 'unixepoch') || '.000000')"


def _profiles(db: sqlite3.Connection, n: int, now: datetime) -> None:
    """One row per contact drawn once: age, buyer or not, days since the last purchase and
    since the last engagement (skewed towards recent), number of orders and events."""
    db.execute(
        "CREATE TABLE profile (c INTEGER PRIMARY KEY, created REAL, buyer INT, pd INT, ed INT, "
        "n_orders INT, n_events INT, spend REAL)"
    )
    db.execute(
        f"""WITH RECURSIVE seq(c) AS (SELECT 1 UNION ALL SELECT c + 1 FROM seq WHERE c < {n})
        INSERT INTO profile
        SELECT c, created, buyer,
            min(created - 1, CAST(900 * u1 * u1 AS INT)),
            min(created - 1, CAST(700 * u2 * u2 AS INT)),
            CASE WHEN buyer THEN 1 + CAST(6 * u3 * u3 AS INT)
                + CASE WHEN u4 < 0.25 THEN CAST(6 * u5 AS INT) ELSE 0 END ELSE 0 END,
            1 + CAST(38 * u6 * u6 * u6 AS INT),
            20 + 140 * u7 * u7
        FROM (SELECT c, 30 + {_h("c", 7919)} % 1070 AS created,
                {_h("c", 40503)} % 100 < 65 AS buyer,
                {_u("c", 2654435761)} AS u1, {_u("c", 2246822519)} AS u2,
                {_u("c", 3266489917)} AS u3, {_u("c", 668265263)} AS u4,
                {_u("c", 374761393)} AS u5, {_u("c", 1103515245)} AS u6,
                {_u("c", 1664525)} AS u7
              FROM seq)"""
    )
    db.execute("CREATE TABLE nums (j INTEGER PRIMARY KEY)")
    db.execute(
        "WITH RECURSIVE s(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM s WHERE j < 64) "
        "INSERT INTO nums SELECT j FROM s"
    )
    db.execute(f"CREATE TEMP TABLE anchor AS SELECT {int(now.timestamp())} AS t")


def _contacts(db: sqlite3.Connection, now: datetime) -> None:
    t = int(now.timestamp())
    names = " ".join(f"WHEN {i} THEN '{name}'" for i, name in enumerate(NAMES))
    cities = " ".join(f"WHEN {i} THEN '{city}'" for i, city in enumerate(CITIES))
    db.execute(
        f"""INSERT INTO contacts (id, customer_id, email, phone, first_name, last_name,
            timezone, locale, created_at, attributes, email_consent, sms_consent,
            orders_count, revenue_total, updated_at)
        SELECT c, printf('cus_%07d', c), printf('customer%d@example.com', c),
            CASE WHEN {_h("c", 97)} % 100 < 35 THEN printf('+4915%09d', c) END,
            CASE {_h("c", 31)} % {len(NAMES)} {names} END,
            printf('Shopper%d', c % 997),
            'Europe/Berlin', 'de-DE',
            {_ts(f"{t} - created * 86400")},
            json_object('city', CASE {_h("c", 131)} % {len(CITIES)} {cities} END,
                        'loyalty_points', {_h("c", 17)} % 500,
                        'source', CASE WHEN c % 3 = 0 THEN 'shopify' ELSE 'newsletter' END),
            CASE WHEN {_h("c", 193)} % 100 < 72 THEN 1
                 WHEN {_h("c", 193)} % 100 < 80 THEN 0 END,
            CASE WHEN {_h("c", 97)} % 100 < 20 THEN 1 END,
            0, 0, {_ts(f"{t} - 15 * 86400")}
        FROM profile"""
    )
    # Consent history: the grant at sign-up; the 8 % who said no first said yes, then no.
    for channel, column in (("email", "email_consent"), ("sms", "sms_consent")):
        db.execute(
            f"""INSERT INTO consent_log (contact_id, channel, granted, at, source)
            SELECT id, '{channel}', 1, created_at, 'import' FROM contacts
            WHERE {column} IS NOT NULL"""
        )
        db.execute(
            f"""INSERT INTO consent_log (contact_id, channel, granted, at, source)
            SELECT id, '{channel}', 0,
                {_ts(f"{t} - ({_h('id', 11)} % 300) * 86400")}, 'unsubscribe'
            FROM contacts WHERE {column} = 0"""
        )
    db.commit()
    db.execute("BEGIN")


def _orders(db: sqlite3.Connection, now: datetime) -> None:
    """Each buyer's orders spread from sign-up to the last purchase (``pd`` days ago)."""
    t = int(now.timestamp())
    db.execute(
        f"""INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency, status,
            refunded)
        SELECT printf('ord_%07d_%02d', c, j), c,
            {_ts(f"{t} - pd * 86400 - CAST((created - pd - 1) * 86400.0 * (j - 1) / n_orders AS INT) - {_h('c * 64 + j', 7)} % 43200")},
            round(spend * (0.6 + 0.8 * {_u("c * 64 + j", 53)}), 2), 'USD',
            CASE WHEN {_h("c * 64 + j", 29)} % 100 < 2 THEN 'refunded' ELSE 'paid' END,
            CASE WHEN {_h("c * 64 + j", 29)} % 100 < 2
                 THEN round(spend * (0.6 + 0.8 * {_u("c * 64 + j", 53)}), 2) ELSE 0 END
        FROM profile JOIN nums ON j <= n_orders
        WHERE buyer"""
    )
    db.commit()
    db.execute("BEGIN")


def _events(db: sqlite3.Connection, now: datetime, budget: int) -> None:
    """Opens (a tenth of them by machines), clicks, page and product views, cart adds over
    the last two years, each contact's latest ``ed`` days ago."""
    t = int(now.timestamp())
    db.execute("DROP INDEX IF EXISTS ix_events_contact_type_at")
    db.execute("DROP INDEX IF EXISTS ix_events_type_at")
    span = "(min(created, 730) - ed)"
    r = f"({_h('c * 64 + j', 2246822519)} % 100)"
    db.execute(
        f"""INSERT INTO events (event_key, contact_id, type, occurred_at, properties, machine)
        SELECT printf('ev_%07d_%02d', c, j), c,
            CASE WHEN r < 35 THEN 'email_opened' WHEN r < 45 THEN 'email_clicked'
                 WHEN r < 80 THEN 'page_view' WHEN r < 93 THEN 'product_view'
                 ELSE 'cart_add' END,
            {_ts(f"{t} - ed * 86400 - CASE WHEN j = 1 THEN 3600 ELSE CAST({span} * 86400.0 * {_u('c * 64 + j', 97)} AS INT) END")},
            CASE WHEN r >= 80 THEN json_object('url', printf('/products/%d', {_h("c * 64 + j", 13)} % 5000)) END,
            CASE WHEN r < 35 AND {_h("c * 64 + j", 7919)} % 10 = 0 THEN 1 ELSE 0 END
        FROM (SELECT c, j, created, ed, {r} AS r FROM profile JOIN nums ON j <= n_events)
        LIMIT {budget}"""
    )
    db.execute("CREATE INDEX ix_events_contact_type_at ON events (contact_id, type, occurred_at)")
    db.execute("CREATE INDEX ix_events_type_at ON events (type, occurred_at)")
    db.commit()
    db.execute("BEGIN")


def _maintained(db: sqlite3.Connection) -> None:
    """The standard attributes from the rows, as ``store.activity`` maintains them."""
    db.execute(
        """UPDATE contacts SET last_email_opened = a.lo, last_email_link_clicked = a.lc,
            last_seen = a.ls
        FROM (SELECT contact_id,
                max(CASE WHEN type = 'email_opened' AND machine = 0 THEN occurred_at END) lo,
                max(CASE WHEN type = 'email_clicked' AND machine = 0 THEN occurred_at END) lc,
                max(CASE WHEN type IN ('page_view', 'product_view', 'cart_add')
                         THEN occurred_at END) ls
              FROM events GROUP BY contact_id) a
        WHERE contacts.id = a.contact_id"""
    )
    db.execute(
        """UPDATE contacts SET first_purchase_at = o.f, last_purchase_at = o.l,
            orders_count = o.n, revenue_total = o.s
        FROM (SELECT contact_id, min(ordered_at) f, max(ordered_at) l, count(*) n,
                     sum(amount - refunded) s
              FROM orders WHERE status = 'paid' GROUP BY contact_id) o
        WHERE contacts.id = o.contact_id"""
    )
    db.commit()
    db.execute("BEGIN")


def _tags(db: sqlite3.Connection, now: datetime) -> None:
    t = int(now.timestamp())
    for i, (tag, percent) in enumerate(TAGS):
        at = _ts(f"{t} - (15 + {_h('id', 101 + i)} % 600) * 86400")
        where = f"{_h('id', 7 + 13 * i)} % 100 < {percent}"
        db.execute(
            f"INSERT INTO contact_tags (contact_id, tag, added_at, added_by) "
            f"SELECT id, '{tag}', {at}, 'import' FROM contacts WHERE {where}"
        )
        db.execute(
            f"INSERT INTO tag_history (contact_id, tag, action, at, source) "
            f"SELECT id, '{tag}', 'added', {at}, 'import' FROM contacts WHERE {where}"
        )
    db.commit()
    db.execute("BEGIN")


# -- what delivery and the customers do with the flow's messages -----------------------------


def _deliver(engine: Any, at: datetime, budget: int) -> None:
    """The pending messages sent; a quarter of them opened (on the day after), one in
    twenty clicked and one in forty followed by an order within four days, with the
    contacts' standard attributes moved forward (and ``updated_at`` stamped) as
    ``store.activity`` does."""
    from winback.store.types import sqlite_text

    stamp = sqlite_text(at)
    with engine.begin() as conn:
        x = conn.exec_driver_sql

        def top(table: str) -> int:
            return int(x(f"SELECT coalesce(max(id), 0) FROM {table}").scalar())

        x(
            "UPDATE outbox SET status = 'sent', attempts = 1, sent_at = not_before, "
            "message_id = printf('<bench-%d@winback.test>', id), claimed_at = not_before "
            "WHERE status = 'pending'"
        )
        events_before, orders_before = top("events"), top("orders")
        left = max(0, budget - int(x("SELECT count(*) FROM events").scalar()))
        sent = "FROM outbox WHERE status = 'sent' AND sent_at >= '" + stamp + "'"
        for kind, share, delay in (("email_opened", 4, 20000), ("email_clicked", 20, 30000)):
            x(
                f"""INSERT INTO events (event_key, contact_id, type, occurred_at, message_id,
                    machine)
                SELECT printf('msg_%d_{kind}', id), contact_id, '{kind}',
                    {_ts(f"strftime('%s', sent_at) + 600 + {_h('id', 31)} % {delay}")},
                    message_id, 0
                {sent} AND {_h("id", 57)} % {share} = 0 LIMIT {left // 2}"""
            )
        x(
            f"""INSERT INTO orders (order_id, contact_id, ordered_at, amount, currency)
            SELECT printf('ord_msg_%d', id), contact_id,
                {_ts(f"strftime('%s', sent_at) + 3600 + {_h('id', 37)} % 300000")},
                30 + {_h("id", 41)} % 90, 'USD'
            {sent} AND {_h("id", 59)} % 40 = 0"""
        )
        x(
            f"""UPDATE contacts SET
                last_email_opened = CASE WHEN a.lo > coalesce(last_email_opened, '')
                    THEN a.lo ELSE last_email_opened END,
                last_email_link_clicked = CASE WHEN a.lc > coalesce(last_email_link_clicked, '')
                    THEN a.lc ELSE last_email_link_clicked END,
                updated_at = '{stamp}'
            FROM (SELECT contact_id,
                    max(CASE WHEN type = 'email_opened' THEN occurred_at END) lo,
                    max(CASE WHEN type = 'email_clicked' THEN occurred_at END) lc
                  FROM events WHERE id > {events_before} GROUP BY contact_id) a
            WHERE contacts.id = a.contact_id"""
        )
        x(
            f"""UPDATE contacts SET orders_count = orders_count + o.n,
                revenue_total = revenue_total + o.s,
                first_purchase_at = coalesce(first_purchase_at, o.f),
                last_purchase_at = CASE WHEN o.l > coalesce(last_purchase_at, '')
                    THEN o.l ELSE last_purchase_at END,
                updated_at = '{stamp}'
            FROM (SELECT contact_id, count(*) n, sum(amount) s, min(ordered_at) f,
                         max(ordered_at) l
                  FROM orders WHERE id > {orders_before} GROUP BY contact_id) o
            WHERE contacts.id = o.contact_id"""
        )
