"""Exactly once under kill -9: ``winback run --now`` is killed at random points while many
contacts go through the reference flow, then rerun to completion; every expected message
exists exactly once (outbox rows and files), none is missing."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

import winback
from tests.conftest import T0
from tests.flows.helpers import make_contacts
from winback.flows.sinks import file_name
from winback.store.schema import (
    flow_entries,
    flow_step_counts,
    orders,
    outbox,
    segment_membership,
    segments,
)
from winback.workspace import Workspace

N = 400
DAY = timedelta(days=1)
INSTANTS = [T0, T0 + 4 * DAY, T0 + 7 * DAY]
TAG = "customer_not-active_after-reactivation"


def _prepare(ws: Workspace) -> list[int]:
    """Dormant customers (one old order, no opens or visits) with email consent."""
    people = make_contacts(
        ws,
        N,
        at=T0 - 400 * DAY,
        first_purchase_at=T0 - 200 * DAY,
        last_purchase_at=T0 - 200 * DAY,
        orders_count=1,
        revenue_total=20,
    )
    with ws.engine.begin() as conn:
        conn.execute(
            insert(orders),
            [
                {
                    "order_id": f"old-{cid}",
                    "contact_id": cid,
                    "ordered_at": T0 - 200 * DAY,
                    "amount": 20,
                    "currency": "USD",
                }
                for cid in people
            ],
        )
        if importlib.util.find_spec("winback.segments.service") is None:
            # Without the segment refresh, place them in the segment by hand.
            key = conn.execute(
                insert(segments).values(name="Customers Not Active", definition={}, updated_at=T0)
            ).inserted_primary_key
            assert key is not None
            sid = key[0]
            conn.execute(
                insert(segment_membership),
                [{"segment_id": sid, "contact_id": c, "entered_at": T0 - DAY} for c in people],
            )
    ws.flows.add("reactivation", now=T0 - DAY)
    return people


def _progress(engine: Any) -> tuple[int, ...]:
    with engine.connect() as conn:
        return (
            int(conn.execute(select(func.count()).select_from(flow_entries)).scalar_one()),
            int(
                conn.execute(select(func.coalesce(func.sum(flow_step_counts.c.n), 0))).scalar_one()
            ),
            int(
                conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.status == "sent")
                ).scalar_one()
            ),
        )


def _run(folder: Path, instant: str, kill_at: int | None, env: dict[str, str]) -> int:
    """Run ``winback run --now``; with ``kill_at``, SIGKILL it as soon as its committed work
    (new entries + counted contact-steps + sent messages) reaches that many rows. Kill points are
    drawn in units of work, not seconds, so they land inside the run on a fast machine as
    on a loaded one."""
    environ = dict(os.environ, WINBACK_FLOW_BATCH_SIZE="40", **env)
    probe = winback.open(folder, environ=env).engine
    before = _progress(probe)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "winback"), "run", "--now", instant, "-w", str(folder)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        if kill_at is None:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err.decode()
            return 0
        base = sum(before)
        while proc.poll() is None and sum(_progress(probe)) - base < kill_at:
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return proc.returncode
    finally:
        if proc.stderr is not None:
            proc.stderr.close()
        probe.dispose()


def _scenario(ws: Workspace, seed: int, env: dict[str, str]) -> None:
    people = _prepare(ws)
    folder = ws.path
    ws.close()
    rng = random.Random(seed)
    killed = 0
    for instant in INSTANTS:
        stamp = instant.strftime("%Y-%m-%dT%H:%M")
        if _run(folder, stamp, rng.randint(1, N), env) == -signal.SIGKILL:
            killed += 1
        _run(folder, stamp, None, env)
    assert killed >= 2, "the runs finished before any kill; raise N"

    check = winback.open(folder, environ=env)
    try:
        with check.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.dedup_key, outbox.c.contact_id, outbox.c.step, outbox.c.status)
            ).all()
            per_contact: dict[int, int] = dict(
                conn.execute(
                    select(flow_entries.c.contact_id, func.count()).group_by(
                        flow_entries.c.contact_id
                    )
                ).all()
            )
            statuses = set(conn.execute(select(flow_entries.c.status).distinct()).scalars())
        files = sorted(p.name for p in (folder / "outbox").glob("*.json"))
        expected = {(c, s) for c in people for s in ("s0", "s2.then.0")}
        # None lost, none doubled: exactly the expected (contact, step) messages, once each.
        assert sorted((int(c), s) for _, c, s, _ in rows) == sorted(expected)
        assert {st for *_, st in rows} == {"sent"}
        assert files == sorted(file_name(k) for k, *_ in rows)
        assert set(per_contact.values()) == {1} and len(per_contact) == N
        assert statuses == {"completed"}
        assert all(check.store.tags_of(c) == [TAG] for c in people[:20])
    finally:
        check.close()
        shutil.rmtree(folder / "outbox", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    sqlite_workspace: Workspace, seed: int
) -> None:
    _scenario(sqlite_workspace, seed, {})


@pytest.mark.slow
def test_kill_9_on_postgres(workspace: Workspace) -> None:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("the SQLite runs are above")
    _scenario(workspace, 4, {"WINBACK_DATABASE_URL": workspace.database_url})
