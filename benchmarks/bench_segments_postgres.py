"""The segments refresh benchmark (see bench_segments.py) on PostgreSQL."""

from __future__ import annotations

from typing import Any

from benchmarks.bench_segments import run_postgres


def run(quick: bool) -> dict[str, Any]:
    return run_postgres(quick)
