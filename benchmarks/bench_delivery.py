"""Render and deliver personalised emails from the outbox to a local SMTP sink (aiosmtpd in
its own process, counting only), against the raw limit: the same number of pre-rendered
messages sent by smtplib over the same number of connections.

Each side runs in a fresh child process so that its peak memory (max RSS) is its own.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import shutil
import smtplib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CONNECTIONS = 4
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _sink(port: int, ready: Any, counter: Any) -> None:
    import asyncio

    from aiosmtpd.controller import Controller

    class Count:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with counter.get_lock():
                counter.value += 1
            return "250 OK"

    controller = Controller(Count(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    try:
        asyncio.run(asyncio.sleep(10**6))
    finally:
        controller.stop()


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _raw(port: int, n: int, out: Any) -> None:
    """Pre-rendered bytes over CONNECTIONS smtplib connections."""
    from tests.delivery_support import add_contact, add_message  # type: ignore[import-not-found]

    import winback
    from winback.clock import FixedClock

    folder = Path(tempfile.mkdtemp()) / "ws"
    ws = winback.init(folder, environ={}, clock=FixedClock(T0))
    ws.settings = ws.settings.model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{port}", "quiet_hours": "", "frequency_caps": {}}
    )
    cid = add_contact(ws, "c0", email="c0@example.com", first_name="Ada")
    add_message(ws, cid)
    worker = ws.delivery.worker()
    rows = worker.claim(ws.clock.now())
    [decision] = worker.prepare(rows, ws.clock.now())
    assert decision.outgoing is not None
    data = decision.outgoing.content.encode()
    worker.close()
    ws.close()
    shutil.rmtree(folder.parent)
    per = n // CONNECTIONS

    def send(_: int) -> None:
        conn = smtplib.SMTP("127.0.0.1", port)
        for _i in range(per):
            conn.sendmail("bench@example.com", ["c0@example.com"], data)
        conn.quit()

    started = time.perf_counter()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(send, range(CONNECTIONS)))
    out.put(
        {
            "seconds": time.perf_counter() - started,
            "sent": per * CONNECTIONS,
            "bytes_per_message": len(data),
            "peak_rss_mb": _maxrss_mb(),
        }
    )


def _ours(port: int, n: int, out: Any) -> None:
    from sqlalchemy import insert

    import winback
    from winback.clock import FixedClock
    from winback.store.schema import contacts, orders, outbox

    folder = Path(tempfile.mkdtemp()) / "ws"
    ws = winback.init(folder, environ={}, clock=FixedClock(T0))
    ws.settings = ws.settings.model_copy(
        update={
            "smtp_url": f"smtp://127.0.0.1:{port}",
            "smtp_connections": CONNECTIONS,
            "quiet_hours": "",
            "frequency_caps": {},
            "delivery_batch_size": 1000,
        }
    )
    names = ["Ada", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro"]
    with ws.engine.begin() as conn:
        conn.execute(
            insert(contacts),
            [
                {
                    "customer_id": f"c{i}",
                    "email": f"c{i}@example.com",
                    "first_name": names[i % 8],
                    "email_consent": True,
                    "attributes": {"tier": "gold" if i % 5 == 0 else "std"},
                    "orders_count": 1,
                    "revenue_total": 20 + i % 90,
                    "created_at": T0,
                    "rfm_segment": "At Risk",
                }
                for i in range(1, n + 1)
            ],
        )
        conn.execute(
            insert(orders),
            [
                {
                    "order_id": f"o{i}",
                    "contact_id": i,
                    "ordered_at": T0,
                    "amount": 20 + i % 90,
                    "currency": "EUR",
                    "items": [
                        {
                            "name": f"Mug #{i % 37}",
                            "price": 12.5,
                            "url": f"https://shop.example/p/{i % 37}",
                        }
                    ],
                }
                for i in range(1, n + 1)
            ],
        )
        conn.execute(
            insert(outbox),
            [
                {
                    "dedup_key": f"reactivation:{i}:email-1",
                    "contact_id": i,
                    "channel": "email",
                    "template": "reactivation-1",
                    "flow": "reactivation",
                    "entry_id": i,
                    "step": "email-1",
                    "priority": "marketing",
                    "payload": {},
                    "status": "pending",
                    "not_before": T0,
                    "attempts": 0,
                    "created_at": T0,
                }
                for i in range(1, n + 1)
            ],
        )
    base_rss = _maxrss_mb()
    worker = ws.delivery.worker()
    started = time.perf_counter()
    report = worker.drain()
    seconds = time.perf_counter() - started
    worker.close()
    ws.close()
    shutil.rmtree(folder.parent)
    out.put(
        {
            "seconds": seconds,
            "sent": report.counts["sent"],
            "claimed": report.claimed,
            "peak_rss_mb": _maxrss_mb(),
            "rss_before_delivery_mb": base_rss,
        }
    )


def _child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result: dict[str, Any] = out.get(timeout=3600)
    proc.join(60)
    return result


def run(quick: bool) -> dict[str, Any]:
    from tests.delivery_support import free_port  # type: ignore[import-not-found]

    n = 5_000 if quick else 100_000
    ctx = mp.get_context("spawn")
    port = free_port()
    ready, counter = ctx.Event(), ctx.Value("l", 0)
    sink = ctx.Process(target=_sink, args=(port, ready, counter), daemon=True)
    sink.start()
    ready.wait(30)
    try:
        raw = _child(_raw, port, n)
        received_raw = counter.value
        ours = _child(_ours, port, n)
        received_ours = counter.value - received_raw
    finally:
        sink.terminate()
        sink.join(10)
    raw_rate = raw["sent"] / raw["seconds"]
    our_rate = ours["sent"] / ours["seconds"]
    figures = {
        "messages": n,
        "connections": CONNECTIONS,
        "ours_msgs_per_s": round(our_rate, 1),
        "raw_msgs_per_s": round(raw_rate, 1),
        "ratio_to_raw": round(our_rate / raw_rate, 3),
        "ours_seconds": round(ours["seconds"], 2),
        "raw_seconds": round(raw["seconds"], 2),
        "ours_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "ours_rss_before_delivery_mb": round(ours["rss_before_delivery_mb"], 1),
        "raw_peak_rss_mb": round(raw["peak_rss_mb"], 1),
        "bytes_per_message": raw["bytes_per_message"],
        "received_by_sink": {"raw": received_raw, "ours": received_ours},
        "targets": {"msgs_per_s": 1000, "ratio_to_raw": 0.6},
    }
    print(
        f"ours {our_rate:,.0f} msg/s ({ours['sent']:,} rendered + delivered in "
        f"{ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MB) vs raw smtplib "
        f"{raw_rate:,.0f} msg/s -> {our_rate / raw_rate:.0%} of raw "
        f"(targets: >= 1,000 msg/s and >= 60%)"
    )
    assert received_ours == ours["sent"] == n, figures
    return figures
