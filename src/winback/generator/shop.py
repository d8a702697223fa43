"""Generate a whole shop: customers in fixed-size chunks (bounded memory, output independent
of the machine and of the number of worker processes), appended to the CSV files."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from winback.generator.chunk import EVENT_ID_DIGITS, ORDER_ID_DIGITS, rendered_chunks, renumber
from winback.generator.context import CHUNK, InvalidGeneratorParameters, make_context, populations
from winback.generator.dirty import (
    CONTACT_KINDS,
    DIRTY_COLUMNS,
    EVENT_KINDS,
    ORDER_KINDS,
    DirtyKind,
    DirtyPlan,
    plan_dirty,
)
from winback.generator.model import ShopModel
from winback.generator.truth import TRUTH_COLUMNS
from winback.generator.writer import (
    CONTACT_COLUMNS,
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    RowWriter,
    Text,
    header,
)

PARALLEL_FROM = 8
"""Chunks from which ``workers=None`` uses one process per CPU."""

Progress = Callable[[int, int], None]
"""Called with (customers done, customers in all) after each chunk."""

__all__ = ["CHUNK", "GeneratedShop", "InvalidGeneratorParameters", "OrdersArrays", "Progress", "generate_orders_arrays", "generate_shop"]  # fmt: skip


@dataclass(frozen=True)
class GeneratedShop:
    """What :func:`generate_shop` wrote. Counts of ``orders`` and ``events`` are the good
    rows; ``*_lines`` include the dirty rows (header excluded)."""

    out_dir: Path
    contacts_path: Path
    orders_path: Path
    events_path: Path
    ground_truth_path: Path
    dirty_rows_path: Path
    parameters_path: Path
    customers: int
    orders: int
    events: int
    dirty_rows: int
    contacts_lines: int
    orders_lines: int
    events_lines: int
    start: date
    end: date
    seed: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


@dataclass(frozen=True)
class OrdersArrays:
    """Orders as arrays (same orders as ``orders.csv`` for the same arguments, without the
    dirty rows): customer index (0-based; customer id ``C{index+1:07d}``), time, amount."""

    customer: NDArray[np.int64]
    ordered_at: NDArray[np.datetime64]
    amount: NDArray[np.float64]


def generate_orders_arrays(
    customers: int, months: int, seed: int, end: date | None = None, *, mean_orders: float | None = None,
    model: ShopModel | None = None,
) -> OrdersArrays:  # fmt: skip
    """The orders of :func:`generate_shop` as NumPy arrays, without writing files."""
    ctx = make_context(customers, months, seed, end, 0.0, mean_orders, model)
    parts = [(pop.index[o.customer], o.at, o.cents) for _, pop, o in populations(ctx)]
    return OrdersArrays(
        customer=np.concatenate([p[0] for p in parts]),
        ordered_at=np.concatenate([p[1] for p in parts]).astype("datetime64[s]"),
        amount=np.concatenate([p[2] for p in parts]) / 100.0,
    )


class _Output:
    """One CSV file being written, with its line count (header = line 1)."""

    def __init__(self, fh: BinaryIO, name: str, columns: tuple[str, ...]) -> None:
        self.fh, self.name, self.lines = fh, name, 1
        fh.write(header(columns))

    def write(self, text: Text, plan: DirtyPlan, dirty: RowWriter) -> None:
        """Write one chunk's lines with the dirty ones inserted or substituted."""
        edits = sorted(
            [(pos, 0, line) for pos, line in plan.inserts]
            + [(idx, 1, line) for idx, line in plan.replacements.items()],
            key=lambda e: (e[0], e[1]),
        )
        data, offsets, prev = text.data, text.offsets, 0
        for pos, replaces, line in edits:
            self.fh.write(data[prev : offsets[pos]])
            self.fh.write(line)
            prev = int(offsets[pos + replaces])
        self.fh.write(data[prev:])
        for offset, kind, value in sorted(plan.records, key=lambda r: r[0]):
            dirty.writerow(
                [self.name, self.lines + 1 + offset, kind.name, kind.field, kind.expect, value]
            )
        self.lines += text.lines + len(plan.inserts)


def generate_shop(
    out_dir: Path,
    *,
    customers: int,
    months: int,
    seed: int,
    end: date | None = None,
    dirty_share: float = 0.01,
    mean_orders: float | None = None,
    mean_events: float | None = None,
    model: ShopModel | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> GeneratedShop:
    """Write ``contacts.csv``, ``orders.csv``, ``events.csv`` (canonical import format),
    ``ground_truth.csv``, ``dirty_rows.csv`` and ``parameters.json`` into ``out_dir``.
    Same arguments, same bytes: ``workers`` (processes) only changes the speed; ``None``
    means one per CPU (at most 4) for 8 chunks (160,000 customers) or more, else one."""
    ctx = make_context(customers, months, seed, end, dirty_share, mean_orders, model, mean_events)
    s, period = ctx.settings, ctx.period
    if workers is None:  # processes pay off from a few chunks on (each starts in ~1 s)
        workers = min(os.cpu_count() or 1, 4) if ctx.chunks >= PARALLEL_FROM else 1
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("contacts", "orders", "events", "ground_truth", "dirty_rows")
    paths = {name: out_dir / f"{name}.csv" for name in names}
    n_orders = n_events = 0
    with ExitStack() as stack:
        files = {k: stack.enter_context(paths[k].open("wb", buffering=1 << 20)) for k in names[:4]}
        contacts = _Output(files["contacts"], "contacts.csv", CONTACT_COLUMNS)
        orders = _Output(files["orders"], "orders.csv", ORDER_COLUMNS)
        events = _Output(files["events"], "events.csv", EVENT_COLUMNS)
        files["ground_truth"].write(header(TRUTH_COLUMNS))
        dirty_file = stack.enter_context(
            paths["dirty_rows"].open("w", newline="", encoding="utf-8")
        )
        dirty_file.write(",".join(DIRTY_COLUMNS) + "\n")
        dirty = csv.writer(dirty_file, lineterminator="\n")
        for chunk in rendered_chunks(ctx, workers):
            k = chunk.k
            text = (
                chunk.orders
                if chunk.numbered
                else renumber(chunk.orders, n_orders + 1, ORDER_ID_DIGITS)
            )
            orders.write(text, _plan(s.seed, k, 1, text, ORDER_KINDS, dirty_share), dirty)
            n_orders += text.lines
            text = (
                chunk.events
                if chunk.numbered
                else renumber(chunk.events, n_events + 1, EVENT_ID_DIGITS)
            )
            events.write(text, _plan(s.seed, k, 2, text, EVENT_KINDS, dirty_share), dirty)
            n_events += text.lines
            text = chunk.contacts
            contacts.write(text, _plan(s.seed, k, 0, text, CONTACT_KINDS, dirty_share), dirty)
            files["ground_truth"].write(chunk.truth)
            if progress is not None:
                progress(chunk.customers_done, s.customers)
    dirty_count = sum(1 for _ in paths["dirty_rows"].open(encoding="utf-8")) - 1
    params_path = out_dir / "parameters.json"
    params = s.as_dict() | {
        "start": period.start.isoformat(),
        "campaigns": len(ctx.campaigns.names),
        "chunk": ctx.chunk,
        # lambda ~ Gamma(r, alpha / rate_scale) once scaled (before the max_rate cap).
        "alpha_effective": s.model.alpha / s.rate_scale,
    }
    params_path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return GeneratedShop(
        out_dir=out_dir,
        contacts_path=paths["contacts"],
        orders_path=paths["orders"],
        events_path=paths["events"],
        ground_truth_path=paths["ground_truth"],
        dirty_rows_path=paths["dirty_rows"],
        parameters_path=params_path,
        customers=s.customers,
        orders=n_orders,
        events=n_events,
        dirty_rows=dirty_count,
        contacts_lines=contacts.lines - 1,
        orders_lines=orders.lines - 1,
        events_lines=events.lines - 1,
        start=period.start,
        end=period.end,
        seed=s.seed,
    )


def _plan(seed: int, k: int, stream: int, text: Text, kinds: tuple[DirtyKind, ...], share: float) -> DirtyPlan:  # fmt: skip
    rng = np.random.default_rng([seed, 7, k, stream])
    return plan_dirty(rng, text.lines, kinds, share, text.line)
