"""Coupons: a unique code per contact and message, generated from a pattern
(``WB-{RANDOM8}``) or taken from an imported pool, recorded in the ``coupons`` table against
the outbox row, and marked redeemed when an order carries the code (``orders.coupon``)."""

from __future__ import annotations

import csv
import re
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from winback.delivery.records import insert_ignore
from winback.errors import DefinitionError, UnreadableFile, WinbackError
from winback.store.schema import coupons, orders, outbox

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
_RANDOM = re.compile(r"\{RANDOM(\d{1,2})\}")


class CouponPoolExhausted(WinbackError):
    """An imported coupon pool has no free code left."""


def generate_code(pattern: str) -> str:
    if not _RANDOM.search(pattern):
        raise DefinitionError(
            f"coupon pattern {pattern!r} has no {{RANDOMn}} part, so codes would not be unique"
        )
    return _RANDOM.sub(
        lambda m: "".join(secrets.choice(_ALPHABET) for _ in range(int(m.group(1)))), pattern
    )


def assign(
    conn: Connection,
    wanted: Sequence[tuple[int, int, str | None]],
    *,
    pattern: str,
    at: datetime,
) -> dict[int, str]:
    """Codes for ``(outbox_id, contact_id, pool)`` triples: the one already recorded for that
    message (a resend keeps its code), else a free pool code, else a generated one.

    Safe under concurrent writers, and idempotent per message: the messages' outbox rows are
    locked first (PostgreSQL, in id order; SQLite's write transaction holds the whole store),
    so two assignments of one message queue and the second finds the first one's code; a
    free pool code is claimed with ``SKIP LOCKED`` (never handed out twice); a generated code
    that collides with an existing one is drawn again. Call it in a write transaction."""
    if not wanted:
        return {}
    ids = sorted({w[0] for w in wanted})
    if conn.dialect.name == "postgresql":
        for chunk in _chunks(ids, 900):
            conn.execute(
                select(outbox.c.id)
                .where(outbox.c.id.in_(chunk))
                .order_by(outbox.c.id)
                .with_for_update(of=outbox)
            ).all()
    codes = _recorded(conn, ids)
    todo = [w for w in wanted if w[0] not in codes]
    by_pool: dict[str, list[tuple[int, int]]] = {}
    generated: list[tuple[int, int]] = []
    for oid, cid, pool in todo:
        if pool:
            by_pool.setdefault(pool, []).append((oid, cid))
        else:
            generated.append((oid, cid))
    for pool, items in by_pool.items():
        free_q = (
            select(coupons.c.id, coupons.c.code)
            .where(and_(coupons.c.pool == pool, coupons.c.assigned_at.is_(None)))
            .order_by(coupons.c.id)
            .limit(len(items))
            .with_for_update(skip_locked=True)
        )
        free = list(conn.execute(free_q))
        if len(free) < len(items):
            raise CouponPoolExhausted(
                f"coupon pool {pool!r} has {len(free)} free codes, {len(items)} needed: "
                "import more with `winback coupons import FILE --pool " + pool + "`"
            )
        params = [
            {"_cid": cid_, "_oid": oid, "_id": row.id}
            for (oid, cid_), row in zip(items, free, strict=True)
        ]
        conn.execute(
            update(coupons)
            .where(coupons.c.id == bindparam("_id"))
            .values(contact_id=bindparam("_cid"), outbox_id=bindparam("_oid"), assigned_at=at),
            params,
        )
        for (oid, _), row in zip(items, free, strict=True):
            codes[oid] = str(row.code)
    while generated:
        fresh: list[dict[str, Any]] = [
            {
                "code": generate_code(pattern),
                "pool": None,
                "contact_id": cid,
                "outbox_id": oid,
                "created_at": at,
                "assigned_at": at,
            }
            for oid, cid in generated
        ]
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        # No conflict target: a code drawn twice and a message already given a code (by a
        # writer this one waited for) are both skipped, and sorted out just below.
        conn.execute(dialect.insert(coupons).on_conflict_do_nothing(), fresh)
        codes.update(_recorded(conn, [oid for oid, _ in generated]))
        generated = [g for g in generated if g[0] not in codes]
    return codes


def _recorded(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """The codes already recorded for these messages."""
    codes: dict[int, str] = {}
    for chunk in _chunks(list(ids), 900):
        for oid, code in conn.execute(
            select(coupons.c.outbox_id, coupons.c.code).where(coupons.c.outbox_id.in_(chunk))
        ):
            codes[int(oid)] = str(code)
    return codes


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def import_pool(conn: Connection, path: Path, *, pool: str, at: datetime) -> tuple[int, int]:
    """Add the codes of a file (one per line, or a CSV with a ``code`` column) to ``pool``;
    returns (added, already known)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableFile(f"{path}: cannot read coupon codes: {exc}") from None
    lines = text.splitlines()
    codes: list[str] = []
    if lines and "," in lines[0] or (lines and lines[0].strip().lower() == "code"):
        reader = csv.DictReader(lines)
        if not reader.fieldnames or "code" not in [f.strip().lower() for f in reader.fieldnames]:
            raise DefinitionError(
                f"no 'code' column (columns: {', '.join(reader.fieldnames or [])})",
                path=str(path),
                location="1",
            )
        key = next(f for f in reader.fieldnames if f.strip().lower() == "code")
        for n, row in enumerate(reader, start=2):
            code = (row.get(key) or "").strip()
            if code:
                codes.append(_checked(code, path, n))
    else:
        for n, line in enumerate(lines, start=1):
            if line.strip():
                codes.append(_checked(line.strip(), path, n))
    if not codes:
        raise DefinitionError("no coupon codes in the file", path=str(path))
    added = 0
    for i in range(0, len(codes), 1000):
        chunk = [{"code": c, "pool": pool, "created_at": at} for c in codes[i : i + 1000]]
        added += insert_ignore(conn, coupons, chunk, "code")
    return added, len(codes) - added


def _checked(code: str, path: Path, line: int) -> str:
    if len(code) > 64 or any(ch.isspace() for ch in code):
        raise DefinitionError(
            f"coupon code {code[:80]!r} is longer than 64 characters or has spaces",
            path=str(path),
            location=str(line),
        )
    return code


def redeem(conn: Connection) -> int:
    """Mark coupons redeemed by orders carrying their code (set-based); returns how many."""
    # An order redeems a code it carries (any case) if placed once the code was assigned.
    carries = and_(
        func.upper(orders.c.coupon) == func.upper(coupons.c.code),
        orders.c.ordered_at >= coupons.c.assigned_at,
    )
    first_use = select(func.min(orders.c.ordered_at)).where(carries).scalar_subquery()
    first_order = (
        select(orders.c.order_id)
        .where(carries)
        .order_by(orders.c.ordered_at, orders.c.order_id)
        .limit(1)
        .scalar_subquery()
    )
    result = conn.execute(
        update(coupons)
        .where(
            and_(
                coupons.c.redeemed_at.is_(None),
                coupons.c.assigned_at.is_not(None),
                exists().where(carries),
            )
        )
        .values(redeemed_at=first_use, order_id=first_order)
    )
    return int(result.rowcount or 0)
