"""Render limits: a template cannot exhaust the host.

A render (all the fields of one message) runs under a :class:`Budget` made from
:class:`RenderLimits` (settings ``render_max_output_chars``, ``render_max_value_size``,
``render_max_loop_iterations``, ``render_timeout_seconds``). The sandbox of
:mod:`winback.delivery.messages.templates` checks it at every place where a template can
make work or memory grow:

- **values**: a string, list or number built by an operator (``*``, ``**``, ``+``, ``%``,
  ``~``), a filter or a method call (``ljust``, ``replace``, ``join``, ``format``, ...) may
  not be larger than ``render_max_value_size`` characters or items, nor a ``range``; sizes
  that can be known before the work (repetition, padding widths, joins, replacements) are
  checked before it is done, so nothing that large is ever allocated;
- **loops**: every iteration of every ``{% for %}`` of the render counts against
  ``render_max_loop_iterations`` (nested loops multiply quickly);
- **output**: every ``{{ ... }}`` output and every captured block counts against four times
  ``render_max_output_chars`` (the fields of an email together), and each field's text
  against ``render_max_output_chars``;
- **time**: the wall clock is read at each of these checks (each loop iteration, operator,
  call, filter and output): a render still running after ``render_timeout_seconds`` is
  stopped there. Python cannot stop a thread from outside, so the stop is cooperative; the
  size limits keep each single step short.

A render that exceeds a limit raises :class:`RenderLimitExceeded` naming the limit and its
setting. Static checks of the same rules are in :mod:`winback.delivery.messages.checks`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import update_wrapper
from typing import TYPE_CHECKING, Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import FILTERS as _BUILTIN_FILTERS
from jinja2.utils import _PassArg

from winback.errors import WinbackError

if TYPE_CHECKING:
    from winback.config import Settings

#: How many times ``render_max_output_chars`` all outputs of one render may add up to.
OUTPUT_FIELDS = 4
#: Size assumed for a value that is not a string or a collection (a number, a date).
SCALAR_SIZE = 32
#: Checks between two reads of the clock.
CLOCK_EVERY = 16


class TemplateRenderError(WinbackError):
    """A template failed while rendering for one contact (unknown variable, sandbox, a
    limit); ``path`` and ``line`` say where, when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class RenderLimitExceeded(TemplateRenderError):
    """A render went past one of the :class:`RenderLimits`."""


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """The limits of one render (see the module docstring); defaults are the settings'."""

    output_chars: int = 1_000_000
    value_size: int = 100_000
    loop_iterations: int = 100_000
    seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderLimits:
        return cls(
            output_chars=settings.render_max_output_chars,
            value_size=settings.render_max_value_size,
            loop_iterations=settings.render_max_loop_iterations,
            seconds=settings.render_timeout_seconds,
        )


class Budget:
    """What one render has used of its limits."""

    __slots__ = ("deadline", "iterations", "limits", "steps", "produced")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.iterations = 0
        self.produced = 0
        self.steps = 0

    def check_time(self) -> None:
        """Stop the render once past its time; the clock is read at every
        :data:`CLOCK_EVERY`-th check (each step between two reads is short)."""
        self.steps += 1
        if self.steps % CLOCK_EVERY == 0:
            self.check_clock()

    def check_clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(
                f"the render ran longer than {self.limits.seconds:g} s and was stopped "
                "(render_timeout_seconds)"
            )

    def tick(self) -> None:
        """One loop iteration."""
        self.iterations += 1
        if self.iterations > self.limits.loop_iterations:
            raise RenderLimitExceeded(
                f"loops ran more than {self.limits.loop_iterations:,} iterations "
                "(render_max_loop_iterations)"
            )
        self.check_time()

    def size(self, size: int, what: str) -> None:
        """Refuse a value of ``size`` characters or items (before or after making it)."""
        if size > self.limits.value_size:
            raise RenderLimitExceeded(
                f"{what} would be {size:,} characters or items, more than "
                f"{self.limits.value_size:,} (render_max_value_size)"
            )

    def emitted(self, size: int) -> None:
        """``size`` characters output (or captured) by the template."""
        self.produced += size
        if self.produced > self.limits.output_chars * OUTPUT_FIELDS:
            raise RenderLimitExceeded(
                f"the template output more than {self.limits.output_chars * OUTPUT_FIELDS:,} "
                f"characters in all ({OUTPUT_FIELDS} x render_max_output_chars)"
            )
        self.check_time()

    def collect(self, chunks: Iterable[str]) -> str:
        """The text of a field (or of a captured block or macro call), refused when it
        passes ``render_max_output_chars``: measured before it is joined. (While the
        chunks are made, every loop iteration and every output counts against the render's
        limits: the chunks held until then are bounded too.)"""
        parts = list(chunks)
        if sum(map(len, parts)) > self.limits.output_chars:
            raise RenderLimitExceeded(
                f"the output is longer than {self.limits.output_chars:,} characters "
                "(render_max_output_chars)"
            )
        self.check_clock()
        return "".join(parts)


_current: ContextVar[Budget | None] = ContextVar("winback_render_budget", default=None)


@contextmanager
def render_budget(limits: RenderLimits) -> Iterator[Budget]:
    """The budget of the render in progress in this thread: a new one for ``limits``, or
    the one already running (a template rendered from inside another shares it)."""
    running = _current.get()
    if running is not None:
        yield running
        return
    budget = Budget(limits)
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def current(limits: RenderLimits) -> Budget:
    """The running budget, or a fresh one (a template evaluated outside a render)."""
    return _current.get() or Budget(limits)


def estimated_size(value: Any, cap: int) -> int:
    """Characters (strings) or items plus characters (collections) of ``value``, counted
    until past ``cap``: a bound on the size of anything made from it."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        total = len(value)
        for item in value:
            if total > cap:
                break
            total += estimated_size(item, cap - total)
        return total
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 1
    return SCALAR_SIZE


# -- operators --------------------------------------------------------------------------------
_WIDTHS = re.compile(r"\d{4,}")
#: Operators the sandbox checks before doing them.
INTERCEPTED_BINOPS = frozenset({"*", "**", "+", "%"})


def _sized(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def check_binop(budget: Budget, op: str, left: Any, right: Any) -> None:
    """Refuse ``left op right`` when its result would pass the value size."""
    if op == "*":
        if _sized(left) and isinstance(right, int):
            budget.size(len(left) * max(right, 0), "a repetition")
        elif _sized(right) and isinstance(left, int):
            budget.size(len(right) * max(left, 0), "a repetition")
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            digits = left.bit_length() * right * 0.30103
            budget.size(int(digits), "a power (digits)")
    elif op == "+":
        if _sized(left) and _sized(right):
            budget.size(len(left) + len(right), "a concatenation")
    elif op == "%" and isinstance(left, str):
        check_widths(budget, left)
        budget.size(len(left) + estimated_size(right, budget.limits.value_size), "a formatting")


def check_widths(budget: Budget, pattern: str) -> None:
    """Refuse a format string whose widths or precisions pass the value size."""
    for number in _WIDTHS.findall(pattern):
        budget.size(int(number), "a format width")


def check_result(budget: Budget, value: Any, what: str) -> Any:
    if _sized(value) or isinstance(value, dict):
        budget.size(len(value), what)
    return value


# -- calls ------------------------------------------------------------------------------------
#: Methods of strings and lists whose integer arguments are sizes (widths, counts).
_SIZE_ARGUMENTS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def check_call(budget: Budget, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call whose result would pass the value size, before making it."""
    budget.check_time()
    target = getattr(func, "__wrapped__", func)  # str.format comes wrapped by the sandbox
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str | bytes | list | tuple):
        return
    name = getattr(target, "__name__", "")
    cap = budget.limits.value_size
    if name in _SIZE_ARGUMENTS:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int):
                budget.size(arg, f"{name}()")
    elif name in ("format", "format_map") and isinstance(owner, str):
        check_widths(budget, owner)
        budget.size(len(owner) + estimated_size([args, kwargs], cap), "a formatting")
    elif name == "join":
        items = args[0] if args else ()
        size = estimated_size(list(items) if isinstance(items, list | tuple) else [], cap)
        budget.size(size + len(owner) * (size and len(items)), "a join")
    elif name == "replace" and len(args) >= 2 and _sized(owner):
        old, new = args[0], args[1]
        if _sized(old) and _sized(new):
            count = owner.count(old) if old else len(owner) + 1
            budget.size(len(owner) + count * max(len(new) - len(old), 0), "a replace")


# -- filters ----------------------------------------------------------------------------------
_SIZED = (str, list, tuple, dict)
#: Filters whose output grows with what they are given: checked before they run.
_GROWING_FILTERS = frozenset({"join", "replace", "format", "string", "tojson", "pprint", "indent"})


def limited_filter(name: str, func: Callable[..., Any], limits: RenderLimits) -> Callable[..., Any]:
    """``func`` (a filter) checked against the running budget: its integer arguments and
    the size of what it is given before it runs (filters that can grow their input), the
    size of its result after."""
    skip = 2 if _PassArg.from_obj(func) is not None else 1
    growing = name in _GROWING_FILTERS
    plain_replace = name == "replace" and func is _BUILTIN_FILTERS.get("replace")
    cap = limits.value_size

    def filtered(*args: Any, **kwargs: Any) -> Any:
        if growing or kwargs:
            if not (plain_replace and not kwargs and _replace_fits(current(limits), skip, args)):
                _check_filter(current(limits), name, skip, args, kwargs)
        else:
            for arg in args[skip:]:
                if arg.__class__ is int and arg > cap:
                    current(limits).size(arg, f"the {name} filter's argument")
        result = func(*args, **kwargs)
        if isinstance(result, _SIZED) and len(result) > cap:
            current(limits).size(len(result), f"the {name} filter's result")
        return result

    return update_wrapper(filtered, func)


def _replace_fits(budget: Budget, skip: int, args: tuple[Any, ...]) -> bool:
    """The checks of :func:`_check_filter` for ``replace`` on strings, made directly: True
    when ``value | replace(old, new)`` fits (its size estimate and its result), False when
    it is not that case or does not fit (the general check then decides and names it)."""
    if len(args) != skip + 2:
        return False
    value, old, new = args[skip - 1], args[skip], args[skip + 1]
    if not (value.__class__ is str and old.__class__ is str and new.__class__ is str):
        return False
    cap = budget.limits.value_size
    if 3 + len(value) + len(old) + len(new) > cap:
        return False
    if len(new) > len(old):
        count = value.count(old) if old else len(value) + 1
        if len(value) + count * (len(new) - len(old)) > cap:
            return False
    budget.check_time()
    return True


def _check_filter(
    budget: Budget, name: str, skip: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Refuse a filter call whose arguments or input would build a value too large."""
    budget.check_time()
    cap = budget.limits.value_size
    for arg in (*args[skip:], *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > cap:
            budget.size(arg, f"the {name} filter's argument")
        elif isinstance(arg, str) and name == "format":
            check_widths(budget, arg)
    if len(args) < skip or name not in _GROWING_FILTERS:
        return
    value = args[skip - 1]
    if name == "format" and isinstance(value, str):
        check_widths(budget, value)
    budget.size(estimated_size([value, *args[skip:]], cap), f"the {name} filter")
    if name == "replace" and len(args) >= skip + 2 and isinstance(value, str):
        old, new = str(args[skip]), str(args[skip + 1])
        count = value.count(old) if old else len(value) + 1
        budget.size(len(value) + count * max(len(new) - len(old), 0), "a replace")


# -- loops and concatenation: compiled through the budget -------------------------------------
class LimitedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with each loop iterated by ``environment.iterate`` (counted,
    timed) and each ``~`` concatenation made by ``environment.join_checked`` (sized)."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables: set[int] = getattr(self, "_loop_iterables", set())
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) in getattr(self, "_loop_iterables", ()):
            self.write("environment.iterate(")
            result = super().visit(node, *args, **kwargs)
            self.write(")")
            return result
        return super().visit(node, *args, **kwargs)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.join_checked({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def iterate(limits: RenderLimits, iterable: Iterable[Any]) -> Iterator[Any]:
    """``iterable``, each item counted as a loop iteration of the running render."""
    budget = current(limits)
    for item in iterable:
        budget.tick()
        yield item


def join_checked(limits: RenderLimits, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
    """A ``~`` concatenation, refused before it is made when it would pass the value size."""
    cap = limits.value_size
    size = 0
    for part in parts:
        size += len(part) if isinstance(part, str) else estimated_size(part, cap)
    if size > cap:
        current(limits).size(size, "a ~ concatenation")
    return join(parts)


def output_counter(limits: RenderLimits) -> Callable[[Any], Any]:
    """The environment's ``finalize``: every ``{{ ... }}`` output counted (by its size)
    against the running render's budget before it is turned into text. Outside a render the
    value passes unchanged (its text is still measured when the field is joined)."""
    cap = limits.output_chars * OUTPUT_FIELDS
    running = _current.get

    def finalize(value: Any) -> Any:
        budget = running()
        if budget is None:
            return value
        budget.produced += len(value) if isinstance(value, str) else estimated_size(value, cap)
        if budget.produced > cap:
            budget.emitted(0)  # raises, naming the limit
        return value

    return finalize


def bounded_range(limits: RenderLimits) -> Callable[..., range]:
    """``range`` of at most ``value_size`` items."""

    def limited_range(*args: int) -> range:
        numbers = range(*args)
        current(limits).size(len(numbers), "a range")
        return numbers

    return limited_range
