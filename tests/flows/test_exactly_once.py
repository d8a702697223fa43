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

import pytest
from sqlalchemy import func, insert, select

import winback
from tests.conftest import T0
from tests.flows.helpers import make_contacts
from winback.flows.sinks import file_name
from winback.store.schema import flow_entries, orders, outbox, segment_membership, segments
from winback.workspace import Workspace

N = 600
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
            sid = conn.execute(
                insert(segments).values(name="Customers Not Active", definition={}, updated_at=T0)
            ).inserted_primary_key[0]
            conn.execute(
                insert(segment_membership),
                [{"segment_id": sid, "contact_id": c, "entered_at": T0 - DAY} for c in people],
            )
    ws.flows.add("reactivation", now=T0 - DAY)
    return people


def _run(folder: Path, instant: str, kill_after: float | None) -> int:
    """Run ``winback run --now``; with ``kill_after``, SIGKILL it that many seconds after it
    started writing to the store (the WAL file changes), i.e. in the middle of its work."""
    env = dict(os.environ, WINBACK_FLOW_BATCH_SIZE="40")
    wal = folder / "winback.db-wal"
    before = wal.stat().st_mtime_ns if wal.exists() else 0
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "winback"), "run", "--now", instant, "-w", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if kill_after is None:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        return 0
    while proc.poll() is None and (not wal.exists() or wal.stat().st_mtime_ns == before):
        time.sleep(0.005)
    deadline = time.monotonic() + kill_after
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stderr is not None
    proc.stderr.close()
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    sqlite_workspace: Workspace, seed: int
) -> None:
    ws = sqlite_workspace
    people = _prepare(ws)
    folder = ws.path
    ws.close()
    rng = random.Random(seed)
    killed = 0
    for instant in INSTANTS:
        stamp = instant.strftime("%Y-%m-%dT%H:%M")
        if _run(folder, stamp, rng.uniform(0.0, 0.8)) == -signal.SIGKILL:
            killed += 1
        _run(folder, stamp, None)
    assert killed >= 2, "the runs finished before any kill; raise N"

    check = winback.open(folder, environ={})
    try:
        with check.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.dedup_key, outbox.c.contact_id, outbox.c.step, outbox.c.status)
            ).all()
            per_contact = dict(
                conn.execute(
                    select(flow_entries.c.contact_id, func.count()).group_by(
                        flow_entries.c.contact_id
                    )
                ).all()
            )
            statuses = set(conn.execute(select(flow_entries.c.status).distinct()).scalars())
        files = sorted(p.name for p in (folder / "outbox").glob("*.json"))
        expected = {(c, s) for c in people for s in ("s0", "s2.then.0")}
        assert sorted((int(c), s) for _, c, s, _ in rows) == sorted(
            expected
        )  # none lost or doubled
        assert {st for *_, st in rows} == {"sent"}
        assert files == sorted(file_name(k) for k, *_ in rows)
        assert set(per_contact.values()) == {1} and len(per_contact) == N
        assert statuses == {"completed"}
        assert all(check.store.tags_of(c) == [TAG] for c in people[:20])
    finally:
        check.close()
        shutil.rmtree(folder / "outbox", ignore_errors=True)
