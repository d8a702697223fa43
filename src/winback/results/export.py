"""A flow's results as CSV rows, one figure per row (long format, so that every count and
rate keeps its denominator); every cell formula-safe (:mod:`winback.csvsafe`)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO, Any

from winback.csvsafe import safe_cell

COLUMNS = ("section", "step", "step_name", "arm", "metric", "value", "denominator", "of")


def _figures(
    section: str, step: str, name: str, arm: str, data: dict[str, Any]
) -> Iterator[tuple[Any, ...]]:
    for key, value in data.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield section, step, name, arm, key, value, "", ""
    for key, r in data.get("rates", {}).items():
        yield section, step, name, arm, key, r["rate"], r["denominator"], r["of"]


def rows(results: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """The figures of :meth:`~winback.results.report.FlowResults.to_dict` as rows of
    :data:`COLUMNS`."""
    for g in results["groups"]:
        yield from _figures("group", "", "", g["group"], g)
    for other, lift in results["lift"].items():
        for metric, figures in (lift or {}).items():
            for key in ("treatment", "control", "difference", "low", "high", "mde"):
                yield "lift", "", "", other, f"{metric}.{key}", figures[key], "", ""
            yield "lift", "", "", other, f"{metric}.verdict", figures["verdict"], "", ""
    for s in results["steps"]:
        yield from _figures("step", s["step"], s["name"], s["variant"] or "", s)
    for b in results["branches"]:
        yield from _figures("branch", b["step"], b["name"], b["branch"], b)
    for v in results["variants"]:
        yield from _figures("variant", v["step"], v["name"], v["variant"], v)
    for e in results["experiments"]:
        yield "experiment", e["step"], e["name"], e["winner"] or "", "status", e["status"], "", ""
        yield "experiment", e["step"], e["name"], "", "reason", e["reason"], "", ""


def write_csv(results: dict[str, Any], out: IO[str]) -> None:
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows(results):
        writer.writerow([safe_cell(cell) for cell in row])
