"""Finding contacts by what a person types: an email address (or its beginning), the
internal id (``#12`` or ``12``), the shop's customer id, or a name (the beginning of the first
name, of the last name, or "first last"). Results come newest contact first, a page at a
time, continued after the last id shown (keyset paging: a later page costs what the first
does).

Every condition is an equality or a prefix range on one column (``email >= 'ann' AND email <
'ann\\U0010ffff'``), which an index on the column answers: email, customer id, first name and
last name have one. The page's ids are found first, from the indexes alone, then only those
rows are read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, false, or_, select

from winback.store.schema import contacts

#: The columns a result row shows.
COLUMNS = (
    "id",
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "orders_count",
    "revenue_total",
    "last_purchase_at",
    "rfm_segment",
    "erased_at",
)
#: Past the last character of any text: ``col < prefix + TOP`` ends a prefix range.
TOP = "\U0010ffff"


@dataclass(frozen=True)
class SearchPage:
    query: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: The id to continue after (``before``) for the next page, None on the last page.
    next_before: int | None = None


def _prefix(column: Any, text: str) -> ColumnElement[bool]:
    return and_(column >= text, column < text + TOP)


def _spellings(word: str) -> list[str]:
    """The ways a name is usually stored: as typed, capitalised, lower case."""
    return list(dict.fromkeys([word, word[:1].upper() + word[1:], word.lower()]))


def _name(words: list[str]) -> ColumnElement[bool]:
    c = contacts.c
    if len(words) == 1:
        return or_(
            *[_prefix(c.first_name, w) for w in _spellings(words[0])],
            *[_prefix(c.last_name, w) for w in _spellings(words[0])],
        )
    first, last = words[0], " ".join(words[1:])
    return and_(
        or_(*[c.first_name == w for w in _spellings(first)]),
        or_(*[_prefix(c.last_name, w) for w in _spellings(last)]),
    )


def condition(query: str) -> ColumnElement[bool] | None:
    """What ``query`` matches, None for every contact (an empty query)."""
    text = query.strip()
    if not text:
        return None
    c = contacts.c
    if text.startswith("#") and text[1:].isdigit():
        return c.id == int(text[1:])
    if "@" in text:
        return _prefix(c.email, text.lower())
    matches = [c.customer_id == text]
    if text.isdigit() and len(text) < 19:
        matches.append(c.id == int(text))
    words = text.split()
    if words and all(any(ch.isalpha() for ch in w) for w in words):
        matches.append(_name(words))
    return or_(*matches) if matches else false()


def search(
    conn: Connection, query: str, *, before: int | None = None, limit: int = 50
) -> SearchPage:
    """A page of the contacts ``query`` matches, newest first, with ids below ``before``."""
    where = condition(query)
    stmt = select(*(contacts.c[name] for name in COLUMNS))
    page = contacts.c.id < before if before is not None else None
    if where is not None:
        # The page's ids first, newest first by an expression of the id (``id + 0``): the
        # planner then finds the matches through the columns' indexes and sorts their ids
        # alone, instead of walking every contact in id order until a page is full (a rare
        # name or a customer id would read the whole table); then those rows.
        ids = select(contacts.c.id).where(where)
        if page is not None:
            ids = ids.where(page)
        ids = ids.order_by((contacts.c.id + 0).desc()).limit(limit + 1)
        stmt = stmt.where(contacts.c.id.in_(ids.scalar_subquery()))
    elif page is not None:
        stmt = stmt.where(page)
    rows = [
        dict(r)
        for r in conn.execute(stmt.order_by(contacts.c.id.desc()).limit(limit + 1)).mappings()
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return SearchPage(query, rows, int(rows[-1]["id"]) if more and rows else None)


__all__ = ["COLUMNS", "SearchPage", "condition", "search"]
