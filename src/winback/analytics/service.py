"""``Workspace.analytics``: the analyses run on a store.

Reads orders and contacts with a few set-based queries (day numbers are computed in SQL),
runs :func:`winback.analytics.analysis.analyze`, and writes the per-contact attributes back
in bulk: rows go into a temporary staging table (``executemany`` on SQLite, ``COPY`` on
PostgreSQL) and one ``UPDATE ... FROM`` moves them into ``contacts``. RFM snapshots go into
``rfm_snapshots`` so that movement between segments can be shown.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, and_, case, func, select, text

from winback import snapshots
from winback.analytics import analysis as an
from winback.analytics._fit import NotEnoughData
from winback.analytics.gamma_gamma import GammaGamma
from winback.analytics.summary import Summary, Transactions, summary_data
from winback.clock import Clock, as_utc
from winback.config import Settings
from winback.store import purchases
from winback.store.activity import ATTRIBUTE_OF_EVENT
from winback.store.repository import _conn
from winback.store.schema import contacts, events, rfm_snapshots
from winback.store.types import sqlite_text

FETCH_CHUNK = 250_000
#: The event types that move ``last_seen`` (site visits).
SITE_ACTIVITY = frozenset(t for t, column in ATTRIBUTE_OF_EVENT.items() if column == "last_seen")


class Analytics:
    """Analyses of one store (``ws.analytics``): ``settings`` chooses the models and their
    horizons, ``clock`` says which day is today."""

    def __init__(self, engine: Engine, settings: Settings, clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    # -- reading ------------------------------------------------------------------------------
    @property
    def _pg(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _day(self, column: str) -> str:
        if self._pg:
            return f"(({column} AT TIME ZONE 'UTC')::date - DATE '1970-01-01')"
        return f"CAST(julianday({column}) - 2440587.5 AS INTEGER)"

    def reference_day(self) -> int:
        return an.day_of(self.clock.now().date())

    def transactions(self, *, conn: Connection | None = None) -> Transactions:
        """Every counted purchase as (contact_id, day number, net amount) arrays."""
        net = purchases.NET_SQL
        amount = f"{net}::float8" if self._pg else f"CAST({net} AS REAL)"
        sql = (
            f"SELECT contact_id, {self._day('ordered_at')}, {amount} FROM orders "  # noqa: S608
            f"WHERE {purchases.COUNTED_SQL}"
        )
        parts = []
        with _conn(self.engine, conn) as c:
            cur = c.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cur.execute(sql)
            while chunk := cur.fetchmany(FETCH_CHUNK):
                flat = itertools.chain.from_iterable(chunk)
                parts.append(np.fromiter(flat, dtype=np.float64, count=3 * len(chunk)))
            cur.close()
        arr = np.concatenate(parts).reshape(-1, 3) if parts else np.zeros((0, 3))
        return Transactions(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2])

    def _fetch(self, sql: str, conn: Connection | None) -> list[Any]:
        if conn is not None:
            return list(conn.exec_driver_sql(sql).fetchall())
        with self.engine.connect() as c:
            cur = c.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cur.execute(sql)
            rows = cur.fetchall()
            cur.close()
            return list(rows)

    def engagement(self, s: Summary) -> an.Engagement:
        """Last open, click and visit day of each summarised customer (NaN: never)."""
        sql = (
            f"SELECT id, {self._day('last_email_opened')}, "  # noqa: S608
            f"{self._day('last_email_link_clicked')}, {self._day('last_seen')} FROM contacts "
            "WHERE last_email_opened IS NOT NULL OR last_email_link_clicked IS NOT NULL "
            "OR last_seen IS NOT NULL"
        )
        rows = self._fetch(sql, None)
        arr = np.array(rows, dtype=np.float64) if rows else np.zeros((0, 4))
        out = np.full((len(s), 3), np.nan)
        if len(arr):
            order = np.argsort(arr[:, 0])
            ids = arr[order, 0]
            pos = np.clip(np.searchsorted(ids, s.customer), 0, len(ids) - 1)
            found = ids[pos] == s.customer
            out[found] = arr[order][pos[found], 1:]
        return an.Engagement(out[:, 0], out[:, 1], out[:, 2])

    def engagement_at(self, s: Summary, day: int) -> an.Engagement:
        """Last open, click (human ones) and site visit day of each summarised customer up
        to day number ``day`` included, read from the events (the contact columns hold the
        latest ones, possibly later)."""
        e = events
        human = e.c.machine.is_(False)
        bound = datetime.combine(an.to_date(day + 1), time(), UTC)
        query = (
            select(
                e.c.contact_id,
                func.max(case((and_(e.c.type == "email_opened", human), e.c.occurred_at))),
                func.max(case((and_(e.c.type == "email_clicked", human), e.c.occurred_at))),
                func.max(case((e.c.type.in_(sorted(SITE_ACTIVITY)), e.c.occurred_at))),
            )
            .where(
                e.c.occurred_at < bound,
                e.c.type.in_(["email_opened", "email_clicked", *sorted(SITE_ACTIVITY)]),
            )
            .group_by(e.c.contact_id)
        )
        out = np.full((len(s), 3), np.nan)
        position = {int(c): i for i, c in enumerate(s.customer)}
        with self.engine.connect() as conn:
            for contact_id, *moments in conn.execute(query):
                i = position.get(int(contact_id))
                if i is None:
                    continue
                for k, moment in enumerate(moments):
                    if moment is not None:
                        out[i, k] = an.day_of(as_utc(_instant(moment)).date())
        return an.Engagement(out[:, 0], out[:, 1], out[:, 2])

    # -- models -------------------------------------------------------------------------------
    def fit(
        self, model: str, *, calibration_end: date | None = None, as_of: date | None = None
    ) -> dict[str, Any]:
        """Fit one model on the purchases up to ``calibration_end`` (default: ``as_of``) and,
        when the observation goes on after it, compare predictions with the holdout period
        up to ``as_of`` (default: today; purchases after it are ignored)."""
        end = an.day_of(as_of) if as_of is not None else self.reference_day()
        cal = an.day_of(calibration_end) if calibration_end is not None else end
        return an.fit_model(self.transactions(), model, cal, end)

    def predict(self) -> dict[str, Any]:
        """Fit the purchase model (setting ``analytics_model``) and Gamma-Gamma on every
        purchase up to today and write P(alive), expected purchases, next order date, days
        overdue, expected spend and CLV onto the contacts."""
        settings = self.settings
        today = self.reference_day()
        s = summary_data(self.transactions(), today, observation_end=today, unit_days=7.0)
        model = an.fit_purchase_model(settings.analytics_model, s)
        try:
            spend: GammaGamma | None = GammaGamma.fitted(s.frequency, s.monetary_value)
        except NotEnoughData:
            spend = None
        from winback.analytics.clv import predict

        p = predict(
            model, spend, s.frequency, s.recency, s.T, s.monetary_value,
            s.last_day.astype(np.float64), today, unit_days=an.UNIT_DAYS,
            horizon_days=settings.clv_horizon_days, annual_discount=settings.clv_discount_rate,
        )  # fmt: skip
        columns = _prediction_columns(p, self.clock.now(), self._pg)
        with self.engine.begin() as conn:
            self._bulk_update(conn, s.customer, columns)
        return {
            "customers": len(s),
            "model": an.model_fit(model),
            "spend_model": an.model_fit(spend),
            "written": list(columns),
        }

    # -- the whole analysis -------------------------------------------------------------------
    def analyze(
        self,
        *,
        write: bool = True,
        holdout: bool = True,
        progress: an.Progress | None = None,
        as_of: date | None = None,
    ) -> an.Analysis:
        """Run every analysis as of ``as_of`` (default: today; later purchases and engagement
        are ignored); with ``write``, store the contact attributes and that day's RFM
        snapshot, and report the movement between segments since the previous snapshot."""
        say = progress or (lambda _m: None)
        say("reading orders")
        tx = self.transactions()
        today = an.day_of(as_of) if as_of is not None else self.reference_day()
        engagement = self.engagement
        if today < self.reference_day():

            def engagement(s: Summary) -> an.Engagement:
                return self.engagement_at(s, today)

        result = an.analyze(
            tx, today, self.settings, engagement=engagement, holdout=holdout,
            progress=progress,
        )  # fmt: skip
        if write:
            say("writing contacts")
            self.write(result)
            result.report["movement"] = self.movement()
        result.report["currency"] = self.settings.currency
        if write:
            snapshots.write(
                self.engine,
                snapshots.ANALYSIS,
                an.to_date(result.reference_day),
                result.report,
                at=self.clock.now(),
            )
        return result

    def write(self, result: an.Analysis) -> None:
        s, rfm, clusters = result.summary, result.rfm, result.clusters
        now = self.clock.now()
        columns: dict[str, list[Any]] = {
            "rfm_r": rfm.r.tolist(),
            "rfm_f": rfm.f.tolist(),
            "rfm_m": rfm.m.tolist(),
            "rfm_segment": rfm.segment.tolist(),
            "cluster": clusters.labels.tolist(),
            "cluster_label": np.asarray(clusters.names, dtype=object)[clusters.labels].tolist(),
        }
        if result.predictions is not None:
            columns.update(_prediction_columns(result.predictions, now, self._pg))
        else:
            columns["analyzed_at"] = [_ts_text(now, self._pg)] * len(s)
        snap = an.to_date(result.reference_day)
        with self.engine.begin() as conn:
            conn.execute(rfm_snapshots.delete().where(rfm_snapshots.c.snapshot_date == snap))
            # The snapshot is copied from the staging table, in SQL.
            snapshot_sql = (
                "INSERT INTO rfm_snapshots (snapshot_date, contact_id, r, f, m, segment) "  # noqa: S608
                f"SELECT {'CAST(:d AS DATE)' if self._pg else ':d'}, id, rfm_r, rfm_f, rfm_m, "
                "rfm_segment FROM _wb_stage"
            )
            self._bulk_update(
                conn, s.customer, columns, then=(snapshot_sql, {"d": snap.isoformat()})
            )

    def movement(self) -> dict[str, Any] | None:
        """Transitions between the two latest RFM snapshots (set-based, in SQL)."""
        snap = rfm_snapshots
        with self.engine.connect() as conn:
            dates = list(
                conn.execute(
                    select(snap.c.snapshot_date)
                    .group_by(snap.c.snapshot_date)
                    .order_by(snap.c.snapshot_date.desc())
                    .limit(2)
                ).scalars()
            )
            if len(dates) < 2:
                return None
            cur, prev = dates
            cur_s, prev_s = snap.alias("cur"), snap.alias("prev")
            query = (
                select(prev_s.c.segment, cur_s.c.segment, func.count())
                .select_from(
                    cur_s.outerjoin(
                        prev_s,
                        and_(
                            prev_s.c.contact_id == cur_s.c.contact_id,
                            prev_s.c.snapshot_date == prev,
                        ),
                    )
                )
                .where(cur_s.c.snapshot_date == cur)
                .group_by(prev_s.c.segment, cur_s.c.segment)
            )
            flows = [
                {"from": a or "(new)", "to": b, "customers": int(n)}
                for a, b, n in conn.execute(query)
            ]
        flows.sort(key=lambda r: (-r["customers"], r["from"], r["to"]))
        return {"from_date": prev, "to_date": cur, "transitions": flows}

    # -- bulk writing -------------------------------------------------------------------------
    def _bulk_update(
        self,
        conn: Connection,
        ids: np.ndarray,
        columns: dict[str, list[Any]],
        *,
        then: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """Stage (id, columns...) rows, then one UPDATE ... FROM; ``then`` is one more
        statement run while the staging table exists."""
        names = list(columns)
        rows = list(zip(ids.tolist(), *(columns[n] for n in names), strict=True))
        types = ", ".join(
            f"{n} {_staging_type(n, conn) if self._pg else ''}".strip() for n in names
        )
        conn.exec_driver_sql("DROP TABLE IF EXISTS _wb_stage")
        key = "id BIGINT PRIMARY KEY" if self._pg else "id INTEGER PRIMARY KEY"  # rowid alias
        conn.exec_driver_sql(f"CREATE TEMP TABLE _wb_stage ({key}, {types})")
        self._bulk_insert(conn, "_wb_stage", ["id", *names], rows)
        sets = ", ".join(f"{n} = s.{n}" for n in names)
        conn.exec_driver_sql(
            f"UPDATE contacts SET {sets} FROM _wb_stage AS s WHERE contacts.id = s.id"  # noqa: S608
        )
        if then is not None:
            conn.execute(text(then[0]), then[1])
        conn.exec_driver_sql("DROP TABLE _wb_stage")

    def _bulk_insert(
        self, conn: Connection, table: str, names: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        raw: Any = conn.connection.driver_connection
        cols = ", ".join(names)
        if self._pg:
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in names)
            cur = raw.cursor()
            cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)  # noqa: S608
            cur.close()


def _instant(value: Any) -> datetime:
    """A time read back from an aggregate (SQLite returns the stored text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _staging_type(column: str, conn: Connection) -> str:
    """The SQL type of a contacts column, for a staging table on this connection."""
    return str(contacts.c[column].type.compile(dialect=conn.dialect))


def _nullable(values: np.ndarray) -> list[Any]:
    a = np.asarray(values, dtype=np.float64)
    if not np.isnan(a).any():
        result: list[Any] = a.tolist()
        return result
    out = a.astype(object)
    out[np.isnan(a)] = None
    return list(out.tolist())


def _day_text(days: np.ndarray, pg: bool) -> list[str]:
    """Midnight UTC of day numbers, as the store's text form of an instant."""
    text = np.datetime_as_string(np.asarray(days, dtype=np.int64).astype("datetime64[D]"))
    return list(np.char.add(text, " 00:00:00+00" if pg else " 00:00:00.000000").tolist())


def _ts_text(moment: datetime, pg: bool) -> str:
    text = sqlite_text(moment)
    return text + "+00" if pg else text


def _prediction_columns(p: Any, now: datetime, pg: bool) -> dict[str, list[Any]]:
    return {
        "p_alive": _nullable(p.p_alive),
        "expected_purchases_90d": _nullable(p.expected_purchases_90d),
        "next_order_expected_at": _day_text(p.next_order_day, pg),
        "days_overdue": _nullable(p.days_overdue),
        "expected_spend": _nullable(p.expected_spend),
        "clv": _nullable(p.clv),
        "analyzed_at": [_ts_text(now, pg)] * len(p.p_alive),
    }
