"""Dirty rows, the way real exports have them, each recorded in ``dirty_rows.csv`` with its
file, line number, kind, field, value and what an importer is expected to do with it.

Rows an importer must reject (``expect = reject``) and exact duplicates (``expect =
duplicate``) are *extra* lines inserted among the good ones, so no good data is lost: every
customer, order and event of the ground truth is still there once. Contact rows with a messy
email or a formula-looking name are modified *in place*: they stay importable (``expect =
normalise`` for the email, which must be trimmed and lower-cased; ``expect = keep`` for the
name, which must be stored as text and never evaluated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

REJECT, DUPLICATE, NORMALISE, KEEP = "reject", "duplicate", "normalise", "keep"
DIRTY_COLUMNS = ("file", "line", "kind", "field", "expect", "value")


@dataclass(frozen=True)
class DirtyKind:
    name: str
    field: str
    column: int  # position of the field in the line
    expect: str
    values: tuple[str, ...] = ()
    last: bool = False  # the field is the line's last (it may hold commas)

    @property
    def in_place(self) -> bool:
        return self.expect in (NORMALISE, KEEP)


BAD_DATES = ("2025-13-45T10:00:00+00:00", "31/02/2025 10:00", "2025-02-30T12:00:00+01:00", "yesterday", "0000-00-00 00:00:00")  # fmt: skip
FORMULAS = ("=cmd|' /C calc'!A0", "=1+1", "+SUM(1+1)", "@SUM(A1:A9)", "-2+3+cmd|' /C notepad'!A0")

CONTACT_KINDS = (
    DirtyKind("missing_customer_id", "customer_id", 0, REJECT, ("",)),
    DirtyKind("bad_date", "created_at", 11, REJECT, BAD_DATES),
    DirtyKind("email_case_space", "email", 1, NORMALISE),
    DirtyKind("formula_name", "first_name", 3, KEEP, FORMULAS),
)
ORDER_KINDS = (
    DirtyKind("bad_date", "ordered_at", 2, REJECT, BAD_DATES),
    DirtyKind("bad_amount", "amount", 3, REJECT, ("N/A", "abc", "12..50", "--5", "€€")),
    DirtyKind("missing_customer_id", "customer_id", 1, REJECT, ("",)),
    DirtyKind("missing_order_id", "order_id", 0, REJECT, ("",)),
    DirtyKind("duplicate", "order_id", 0, DUPLICATE),
)
EVENT_KINDS = (
    DirtyKind("bad_date", "occurred_at", 3, REJECT, BAD_DATES),
    DirtyKind("missing_customer_id", "customer_id", 1, REJECT, ("",)),
    DirtyKind(
        "bad_json",
        "properties",
        4,
        REJECT,
        ('{"sku":"APP-0001","category"}', "{sku: APP-0001}", "not json"),
        last=True,
    ),  # fmt: skip
    DirtyKind("duplicate", "event_id", 0, DUPLICATE),
)


@dataclass
class DirtyPlan:
    """Lines to insert (before the given original line, ascending), lines to replace, and
    the records: (0-based line index within the chunk's output, kind, value)."""

    inserts: list[tuple[int, bytes]] = field(default_factory=list)
    replacements: dict[int, bytes] = field(default_factory=dict)
    records: list[tuple[int, DirtyKind, str]] = field(default_factory=list)


def replace_field(line: bytes, column: int, value: bytes, *, last: bool = False) -> bytes:
    """The line with field ``column`` replaced. Fields before it hold no commas; unless it is
    the last field, neither does it."""
    ending = line.endswith(b"\n")
    parts = line.rstrip(b"\n").split(b",", column if last else column + 1)
    parts[column] = value
    return b",".join(parts) + (b"\n" if ending else b"")


def field_of(line: bytes, column: int) -> bytes:
    return line.rstrip(b"\n").split(b",", column + 1)[column]


def messy_email(email: str, spaces: int) -> str:
    local, _, domain = email.partition("@")
    return f"{' ' * spaces}{local.title()}@{domain.upper()} "


def plan_dirty(
    rng: np.random.Generator,
    n_lines: int,
    kinds: tuple[DirtyKind, ...],
    share: float,
    line: Callable[[int], bytes],
) -> DirtyPlan:
    plan = DirtyPlan()
    if n_lines == 0 or share <= 0:
        return plan
    count = int(rng.binomial(n_lines, min(share, 0.5)))
    which = rng.integers(0, len(kinds), count).tolist()
    # All random draws up front, one array each: the loop below only assembles lines.
    source = rng.integers(0, n_lines, count)
    after = (source + 1 + np.floor(rng.random(count) * (n_lines - source))).astype(np.int64)
    pos = rng.integers(0, n_lines + 1, count).tolist()
    pick = rng.random(count).tolist()
    spaces = rng.integers(1, 3, count).tolist()
    inserted: list[tuple[int, bytes, DirtyKind, str]] = []
    in_place: dict[int, tuple[bytes, DirtyKind, str]] = {}
    for d, (k, src, dst) in enumerate(zip(which, source.tolist(), after.tolist(), strict=True)):
        kind = kinds[k]
        value = kind.values[int(pick[d] * len(kind.values))] if kind.values else ""
        if kind.expect == DUPLICATE:
            original = line(src)
            inserted.append((dst, original, kind, field_of(original, kind.column).decode()))
        elif kind.in_place:
            if src in in_place:
                continue
            original = line(src)
            if not kind.values:
                value = messy_email(field_of(original, kind.column).decode(), spaces[d])
            text = replace_field(original, kind.column, _csv(value), last=kind.last)
            in_place[src] = (text, kind, value)
        else:
            source_line = line(min(pos[d], n_lines - 1))
            text = replace_field(source_line, kind.column, _csv(value), last=kind.last)
            inserted.append((pos[d], text, kind, value))
    inserted.sort(key=lambda item: item[0])
    positions = np.array([pos for pos, *_ in inserted], dtype=np.int64)
    for rank, (pos, text, kind, value) in enumerate(inserted):
        plan.inserts.append((pos, text))
        plan.records.append((pos + rank, kind, value))
    for idx, (text, kind, value) in sorted(in_place.items()):
        plan.replacements[idx] = text
        shift = int(np.searchsorted(positions, idx, side="right"))
        plan.records.append((idx + shift, kind, value))
    return plan


def _csv(value: str) -> bytes:
    """The value as a CSV field (quoted when it holds a comma or a quote)."""
    if any(ch in value for ch in ',"\n\r'):
        value = '"' + value.replace('"', '""') + '"'
    return value.encode()
