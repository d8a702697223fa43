"""Delivering a backlog with several worker processes (``delivery_processes``).

Each extra process opens the same store and runs its own :class:`DeliveryWorker`: the claim
protocol (an ``UPDATE ... RETURNING`` of due ``pending`` rows to ``sending``, with ``FOR
UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers) is what keeps every row with
exactly one worker, so nothing is shared between processes but the database. A process that
fails hands back the rows it did not send at once; one that dies leaves its claimed rows in
``sending``, reconciled after ``delivery_lease_seconds`` like any crashed worker's (those
the provider had accepted become ``sent``; docs/delivery.md). Processes are spawned, not forked: the parent
may hold threads, sockets and database connections.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select

from winback.errors import WinbackError
from winback.store.schema import outbox

if TYPE_CHECKING:
    import threading

    from winback.clock import Clock
    from winback.config import Settings
    from winback.delivery.worker import BatchReport, DeliveryWorker


class DeliveryProcessFailed(WinbackError):
    """A delivery worker process exited abnormally (its claims are reconciled later)."""


def due_count(worker: DeliveryWorker, limit: int) -> int:
    """How many rows the worker could claim now, counting at most ``limit``."""
    channels = worker.claimable()
    if not channels:
        return 0
    due = (
        select(outbox.c.id)
        .where(
            and_(
                outbox.c.status == "pending",
                outbox.c.not_before <= worker.clock.now(),
                outbox.c.channel.in_(channels),
            )
        )
        .limit(limit)
        .subquery()
    )
    with worker.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(due)).scalar_one())


def _drain_child(url: str, folder: str, settings: Settings, clock: Clock, out: Any) -> None:
    """A spawned process's delivery: its own engine on the store at ``url`` and the
    workspace ``folder``'s templates, channels and inbox."""
    from winback.delivery import Delivery
    from winback.store.engine import make_engine
    from winback.store.repository import Store

    engine = make_engine(url, busy_timeout=settings.store_busy_timeout)
    worker = Delivery(engine, settings, clock, Store(engine), Path(folder)).worker()
    try:
        report = worker.drain()
    finally:
        worker.close()
        engine.dispose()
    out.put((report.claimed, dict(report.counts)))


def drain_parallel(
    worker: DeliveryWorker,
    workspace: Path,
    processes: int,
    *,
    stop: threading.Event | None = None,
) -> BatchReport:
    """Drain the outbox with ``worker`` in this process and ``processes - 1`` spawned ones
    that open the workspace folder ``workspace`` with the worker's settings and clock (only
    when more than one batch is due: a process costs about half a second to start).
    ``stop`` ends this process's worker early (the spawned processes drain on)."""
    from winback.delivery.worker import BatchReport

    settings = worker.settings
    extra = processes - 1
    if extra > 0:
        batch = settings.delivery_batch_size
        extra = min(extra, due_count(worker, batch * processes) // batch - 1)
    if extra <= 0:
        return worker.drain(stop=stop)
    url = worker.engine.url.render_as_string(hide_password=False)
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    children = [
        ctx.Process(
            target=_drain_child,
            args=(url, str(workspace), settings, worker.clock, out),
            name=f"winback-delivery-{i + 1}",
        )
        for i in range(extra)
    ]
    for child in children:
        child.start()
    try:
        total = worker.drain(stop=stop)
    finally:
        for child in children:
            child.join()
    total.processes = 1 + len(children)
    failed = [c for c in children if c.exitcode != 0]
    while not out.empty():
        claimed, counts = out.get()
        total += BatchReport(claimed, Counter(counts))
    if failed:
        codes = ", ".join(f"{c.name}: exit code {c.exitcode}" for c in failed)
        raise DeliveryProcessFailed(
            f"delivery worker process failed ({codes}); the messages it had claimed and not "
            f"sent are pending again, or, if it died, reconciled after delivery_lease_seconds "
            f"({settings.delivery_lease_seconds} s)"
        )
    return total
