"""Dialect-aware SQL for values inside JSON documents (``contacts.attributes``,
``events.properties``, ``orders.items``), on SQLite (JSON1) and PostgreSQL (``jsonb``).

Every extraction is *typed*: it yields the value when the JSON value has the wanted type and
NULL otherwise, so that a comparison with a value of another type is simply false instead of an
error (PostgreSQL) or a surprising cross-type comparison (SQLite). Keys are bound parameters.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class _JsonFn(FunctionElement[Any]):
    inherit_cache = True

    def _parts(self, compiler: SQLCompiler, **kw: Any) -> list[str]:
        return [compiler.process(c, **kw) for c in self.clauses]


class json_number(_JsonFn):
    """The number at ``key`` (NULL when missing or not a number)."""

    inherit_cache = True
    type = Float()
    name = "json_number"


class json_text(_JsonFn):
    """The string at ``key`` (NULL when missing or not a string)."""

    inherit_cache = True
    type = String()
    name = "json_text"


class json_bool(_JsonFn):
    """The boolean at ``key`` (NULL when missing or not a boolean)."""

    inherit_cache = True
    type = Boolean()
    name = "json_bool"


class json_present(_JsonFn):
    """True when ``key`` exists and is not JSON null."""

    inherit_cache = True
    type = Boolean()
    name = "json_present"


class json_array_has(_JsonFn):
    """True when the value at ``key`` is an array containing the element; arguments: document,
    key, the element as a JSON-encoded one-element array (for PostgreSQL) and the bare element
    (for SQLite)."""

    inherit_cache = True
    type = Boolean()
    name = "json_array_has"


class json_items_have(_JsonFn):
    """True when the document is an array with an object whose ``key`` equals the text value
    (for instance an order's items with ``category`` = ``books``)."""

    inherit_cache = True
    type = Boolean()
    name = "json_items_have"


def _sqlite_path(key: str) -> str:
    return f"'$.\"' || {key} || '\"'"


@compiles(json_number, "sqlite")
def _num_sqlite(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    path = _sqlite_path(key)
    return (
        f"(CASE WHEN json_type({doc}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({doc}, {path}) END)"
    )


@compiles(json_number, "postgresql")
def _num_pg(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    return (
        f"(CASE WHEN jsonb_typeof({doc} -> CAST({key} AS TEXT)) = 'number' "
        f"THEN CAST({doc} ->> CAST({key} AS TEXT) AS DOUBLE PRECISION) END)"
    )


@compiles(json_text, "sqlite")
def _text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    path = _sqlite_path(key)
    return f"(CASE WHEN json_type({doc}, {path}) = 'text' THEN json_extract({doc}, {path}) END)"


@compiles(json_text, "postgresql")
def _text_pg(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    return (
        f"(CASE WHEN jsonb_typeof({doc} -> CAST({key} AS TEXT)) = 'string' "
        f"THEN {doc} ->> CAST({key} AS TEXT) END)"
    )


@compiles(json_bool, "sqlite")
def _bool_sqlite(element: json_bool, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    path = _sqlite_path(key)
    return f"(CASE json_type({doc}, {path}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"


@compiles(json_bool, "postgresql")
def _bool_pg(element: json_bool, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    return (
        f"(CASE WHEN jsonb_typeof({doc} -> CAST({key} AS TEXT)) = 'boolean' "
        f"THEN CAST({doc} ->> CAST({key} AS TEXT) AS BOOLEAN) END)"
    )


@compiles(json_present, "sqlite")
def _present_sqlite(element: json_present, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    return f"(COALESCE(json_type({doc}, {_sqlite_path(key)}), 'null') <> 'null')"


@compiles(json_present, "postgresql")
def _present_pg(element: json_present, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key = element._parts(compiler, **kw)
    return f"(COALESCE(jsonb_typeof({doc} -> CAST({key} AS TEXT)), 'null') <> 'null')"


@compiles(json_array_has, "sqlite")
def _array_has_sqlite(element: json_array_has, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key, _encoded, bare = element._parts(compiler, **kw)
    path = _sqlite_path(key)
    return (
        f"(json_type({doc}, {path}) = 'array' AND EXISTS "  # noqa: S608 (compiled SQL parts)
        f"(SELECT 1 FROM json_each({doc}, {path}) AS je WHERE je.value = {bare}))"
    )


@compiles(json_array_has, "postgresql")
def _array_has_pg(element: json_array_has, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key, encoded, _bare = element._parts(compiler, **kw)
    value = f"({doc} -> CAST({key} AS TEXT))"
    return (
        f"(COALESCE(jsonb_typeof({value}), '') = 'array' AND {value} @> CAST({encoded} AS JSONB))"
    )


@compiles(json_items_have, "sqlite")
def _items_sqlite(element: json_items_have, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key, value = element._parts(compiler, **kw)
    return (
        f"(json_type({doc}) = 'array' AND EXISTS (SELECT 1 FROM json_each({doc}) AS je "  # noqa: S608
        f"WHERE json_type(je.value) = 'object' "
        f"AND CAST(json_extract(je.value, {_sqlite_path(key)}) AS TEXT) = {value}))"
    )


@compiles(json_items_have, "postgresql")
def _items_pg(element: json_items_have, compiler: SQLCompiler, **kw: Any) -> str:
    doc, key, value = element._parts(compiler, **kw)
    return (
        f"(EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({doc}) = 'array' "  # noqa: S608
        f"THEN {doc} ELSE CAST('[]' AS JSONB) END) AS je(value) "
        f"WHERE jsonb_typeof(je.value) = 'object' "
        f"AND je.value ->> CAST({key} AS TEXT) = CAST({value} AS TEXT)))"
    )


class unindexed(_JsonFn):
    """The column itself; on SQLite written ``+column`` so that the planner scans rather than
    combining indexes (a scan is far cheaper for broad conditions such as "not active")."""

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element._parts(compiler, **kw)
    return f"+{column}"


@compiles(unindexed)
def _unindexed_default(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = element._parts(compiler, **kw)
    return column
