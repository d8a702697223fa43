"""What ``winback templates validate`` checks beyond syntax and variable names: every
construct the sandbox would refuse at render time, found in the template's syntax tree with
its line, and a render against a sample contact under the same limits.

Static checks (:func:`blocked_constructs`):

- private attributes (``x.__class__``, ``x._secret``, ``x['__globals__']``): the sandbox
  refuses them;
- unknown fields of the context's records (``shop``, ``message``, ``rfm``, ``analytics``,
  ``last_order``);
- sizes known in the source that pass ``render_max_value_size``: ``range(10**9)``,
  ``'a' * 300000000``, ``10 ** 10000000``, ``center(300000000)``, a format width;
- nested loops over constant ranges whose iterations together pass
  ``render_max_loop_iterations``.

Layouts and partials (``include``, ``extends``, ``import``) are checked by the caller with
the same function; names leading outside the templates folder and the library are reported
there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

from jinja2 import nodes

from winback.delivery.messages.limits import RenderLimits
from winback.store.schema import ANALYTICS_COLUMNS, contacts, orders

_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
#: The fields of the records of the render context (see ``render_context``).
RECORD_FIELDS: dict[str, frozenset[str]] = {
    "shop": frozenset({"name", "url", "currency"}),
    "message": frozenset({"id", "flow", "step", "variant", "template"}),
    "rfm": frozenset({"r", "f", "m", "segment"}),
    "analytics": frozenset(k for k in ANALYTICS_COLUMNS if not k.startswith("rfm_")),
    "last_order": frozenset(orders.c.keys()),
}
_SIZED_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "truncate"})
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH = re.compile(r"\d+")


def blocked_constructs(ast: nodes.Template, limits: RenderLimits) -> Iterator[tuple[int, str]]:
    """``(line, message)`` for each construct of ``ast`` that rendering would refuse
    (lines are the source's, from 1)."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        yield from _private_or_unknown(node)
    for call in ast.find_all(nodes.Call):
        yield from _sized_call(call, limits)
    for op in ast.find_all((nodes.Mul, nodes.Pow, nodes.Mod)):
        yield from _sized_operator(op, limits)
    for flt in ast.find_all(nodes.Filter):
        for arg in flt.args:
            value = _const(arg)
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and (flt.name in _SIZED_FILTERS and value > limits.value_size)
            ):
                yield flt.lineno, _too_big(f"the {flt.name} filter's {value:,}", limits)
        if flt.name == "format" and isinstance(_const(flt.node), str):
            yield from _widths(flt.lineno, str(_const(flt.node)), limits)
    yield from _nested_loops(ast, limits)


def _private_or_unknown(node: nodes.Expr) -> Iterator[tuple[int, str]]:
    assert isinstance(node, nodes.Getattr | nodes.Getitem)
    name = node.attr if isinstance(node, nodes.Getattr) else _const(node.arg)
    if not isinstance(name, str):
        return
    if name.startswith("_"):
        yield node.lineno, (f"attribute {name!r} is private: the sandbox refuses it when rendering")
        return
    target = node.node
    if isinstance(node, nodes.Getattr) and isinstance(target, nodes.Name):
        known = RECORD_FIELDS.get(target.name)
        if known is not None and name not in known and name not in _DICT_METHODS:
            yield (
                node.lineno,
                (f"{target.name} has no field {name!r} (known: {', '.join(sorted(known))})"),
            )


def _sized_call(call: nodes.Call, limits: RenderLimits) -> Iterator[tuple[int, str]]:
    func = call.node
    args = [_const(a) for a in call.args]
    if isinstance(func, nodes.Name) and func.name == "range":
        if args and all(isinstance(a, int) for a in args):
            try:
                size = len(range(*args))
            except (TypeError, ValueError):
                return
            if size > limits.value_size:
                yield call.lineno, _too_big(f"range of {size:,} items", limits)
        elif any(a is _UNKNOWN for a in args):
            return  # a computed bound: rendering stops it at the limit
    elif isinstance(func, nodes.Getattr):
        if func.attr in _SIZED_METHODS:
            for value in args:
                if isinstance(value, int) and value > limits.value_size:
                    yield call.lineno, _too_big(f"{func.attr}({value:,})", limits)
        elif func.attr in ("format", "format_map") and isinstance(_const(func.node), str):
            yield from _widths(call.lineno, str(_const(func.node)), limits)


def _sized_operator(op: nodes.BinExpr, limits: RenderLimits) -> Iterator[tuple[int, str]]:
    left, right = _const(op.left), _const(op.right)
    if isinstance(op, nodes.Mod):
        if isinstance(left, str):
            yield from _widths(op.lineno, left, limits)
        return
    if isinstance(op, nodes.Pow):
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            digits = int(left.bit_length() * right * math.log10(2))
            if digits > limits.value_size:
                yield op.lineno, _too_big(f"a power of about {digits:,} digits", limits)
        return
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            size = len(seq) * times
            if size > limits.value_size:
                yield op.lineno, _too_big(f"a repetition of {size:,} characters", limits)


def _widths(line: int, pattern: str, limits: RenderLimits) -> Iterator[tuple[int, str]]:
    for number in _WIDTH.findall(pattern):
        if int(number) > limits.value_size:
            yield line, _too_big(f"a format width of {int(number):,}", limits)
            return


def _nested_loops(ast: nodes.Node, limits: RenderLimits) -> Iterator[tuple[int, str]]:
    """Loops over constant ranges nested so deep their iterations pass the limit."""

    def walk(node: nodes.Node, outer: int) -> Iterator[tuple[int, str]]:
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.For):
                size = _range_size(child.iter)
                total = outer * (size if size is not None else 1)
                if size is not None and total > limits.loop_iterations:
                    yield (
                        child.lineno,
                        (
                            f"nested loops run {total:,} iterations, more than "
                            f"{limits.loop_iterations:,} (render_max_loop_iterations)"
                        ),
                    )
                    continue
                yield from walk(child, total)
            else:
                yield from walk(child, outer)

    yield from walk(ast, 1)


def _range_size(node: nodes.Node) -> int | None:
    if not (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "range"
    ):
        return None
    args = [_const(a) for a in node.args]
    if not args or not all(isinstance(a, int) for a in args):
        return None
    try:
        return len(range(*args))
    except (TypeError, ValueError):
        return None


def _too_big(what: str, limits: RenderLimits) -> str:
    return f"{what} passes render_max_value_size ({limits.value_size:,}): rendering refuses it"


_UNKNOWN = object()


def _const(node: nodes.Node | None) -> Any:
    """The value of a constant expression (``10**9`` included), else a marker."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.Pow | nodes.Mul | nodes.Add | nodes.Sub):
        left, right = _const(node.left), _const(node.right)
        if isinstance(left, int) and isinstance(right, int):
            if isinstance(node, nodes.Pow):
                return left**right if 0 <= right <= 64 and abs(left) < 2**16 else _UNKNOWN
            if isinstance(node, nodes.Mul):
                return left * right
            return left + right if isinstance(node, nodes.Add) else left - right
    if isinstance(node, nodes.Neg):
        inner = _const(node.node)
        return -inner if isinstance(inner, int) else _UNKNOWN
    return _UNKNOWN


# -- the sample render ------------------------------------------------------------------------
class _Anything(dict[str, Any]):
    """A custom-attribute or payload dict in which every key has a sample value."""

    def __missing__(self, key: str) -> str:
        return f"sample {key}"


def _sample_value(column: Any) -> Any:
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return None
    samples: dict[type, Any] = {
        str: "Sample",
        int: 3,
        float: 0.5,
        bool: True,
        Decimal: Decimal("42.00"),
        datetime: datetime(2024, 5, 1, 12, tzinfo=UTC),
        date: date(1990, 5, 1),
        dict: {},
        list: [],
    }
    return samples.get(kind)


def sample_context(now: datetime) -> dict[str, Any]:
    """The variables of a render (as ``render_context`` makes them) for a sample contact
    with every field filled in, a last order with two items, tags, a coupon, and custom
    attributes and payload data that have every key: what ``templates validate`` renders
    each template with."""
    person = {c.name: _sample_value(c) for c in contacts.c}
    person.update(
        id=1,
        customer_id="sample-1",
        email="sample@example.com",
        first_name="Sam",
        last_name="Sample",
        full_name="Sam Sample",
        timezone="UTC",
        locale="en",
        attributes=_Anything(),
    )
    items = [
        {"name": "Blue mug", "sku": "MUG-1", "quantity": 1, "price": 12.5},
        {"name": "Tea", "sku": "TEA-1", "quantity": 2, "price": 8.0},
    ]
    order = {c.name: _sample_value(c) for c in orders.c}
    order.update(order_id="SAMPLE-1", currency="USD", coupon=None, items=items)
    return {
        "contact": person,
        "custom": _Anything(),
        "tags": ["vip", "newsletter"],
        "last_order": order,
        "products": items,
        "rfm": {"r": 4, "f": 3, "m": 5, "segment": "Loyal"},
        "analytics": {k: person.get(k) for k in RECORD_FIELDS["analytics"]},
        "coupon": _Anything(code="SAMPLE-COUPON"),  # with what the flow put in coupon_info
        "unsubscribe_url": "https://example.com/u/sample",
        "feedback_url": "https://example.com/f/sample",
        "shop": {"name": "Sample shop", "url": "https://example.com", "currency": "USD"},
        "message": {
            "id": 1,
            "flow": "sample",
            "step": "sample",
            "variant": None,
            "template": "sample",
        },
        "data": _Anything(),
        "now": now,
    }


def failing_line(exc: BaseException, filenames: set[str]) -> tuple[str, int] | None:
    """Where in a template ``exc`` (or what caused it) was raised: the innermost frame of
    a compiled template or of Jinja's rewritten traceback whose file is one of
    ``filenames`` (a template file's line, or a field's line counted from its start)."""
    found: tuple[str, int] | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb: TracebackType | None = current.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            filename = frame.f_code.co_filename
            if filename in filenames:
                template = frame.f_globals.get("__jinja_template__")
                line = (
                    template.get_corresponding_lineno(tb.tb_lineno)
                    if template is not None
                    else tb.tb_lineno
                )
                found = (filename, line)
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return found
