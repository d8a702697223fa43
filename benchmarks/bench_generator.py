"""Shop generator: 1,000,000 customers with about 10 orders and 10 events each.

Ours: ``generate_shop`` end to end (simulation, formatting, dirty rows, writing), rows per
second over all files. Reference: the usual way to write such a file, ``csv.writer`` with
``datetime.isoformat`` and ``json.dumps`` per order, given the orders already simulated
(``generate_orders_arrays``) — formatting and writing only, on up to 1,000,000 orders.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from winback.generator import generate_orders_arrays, generate_shop


def run(quick: bool) -> dict[str, Any]:
    customers = 20_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        cpu_before = _cpu_seconds()
        shop = generate_shop(
            Path(tmp) / "shop",
            customers=customers,
            months=24,
            seed=1,
            mean_orders=10,
            mean_events=10,
        )
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
        rows = shop.contacts_lines + shop.orders_lines + shop.events_lines + customers
        reference = _reference_rows_per_second(Path(tmp) / "reference.csv", min(customers, 100_000))
    peak_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    ours = rows / seconds
    figures = {
        "customers": customers,
        "orders": shop.orders,
        "events": shop.events,
        "seconds": round(seconds, 1),
        "cpu_seconds_all_processes": round(cpu, 1),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "rows_per_second": round(ours),
        "reference_csv_writer_rows_per_second": round(reference),
        "ratio_ours_to_reference": round(ours / reference, 2),
        "peak_memory_mb_per_process": round(peak_mb),
    }
    print(
        f"generate-shop: {customers:,} customers, {shop.orders:,} orders, {shop.events:,} events "
        f"in {seconds:.1f} s ({cpu:.0f} CPU s in all processes, load {os.getloadavg()[0]:.1f}) "
        f"= {ours:,.0f} rows/s; csv.writer reference {reference:,.0f} rows/s "
        f"(formatting only) -> x{ours / reference:.2f}; peak {peak_mb:.0f} MB per process",
        flush=True,
    )
    return figures


def _cpu_seconds() -> float:
    """User and system time of this process and of its finished worker processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _reference_rows_per_second(path: Path, customers: int) -> float:
    arrays = generate_orders_arrays(customers, 24, 1, mean_orders=10)
    n = min(len(arrays.customer), 1_000_000)
    seconds = arrays.ordered_at[:n].astype("int64").tolist()
    amounts = arrays.amount[:n].tolist()
    who = arrays.customer[:n].tolist()
    started = time.perf_counter()
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["order_id", "customer_id", "ordered_at", "amount", "currency", "items", "coupon"])  # fmt: skip
        for i in range(n):
            item = [{"sku": "APP-0001", "category": "apparel", "qty": 1, "price": amounts[i]}]
            writer.writerow(
                [f"O{i + 1:09d}", f"C{who[i] + 1:07d}",
                 datetime.fromtimestamp(seconds[i], UTC).isoformat(), f"{amounts[i]:.2f}", "EUR",
                 json.dumps(item), ""]
            )  # fmt: skip
    return n / (time.perf_counter() - started)
