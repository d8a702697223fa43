"""Message templates: YAML files in the workspace's ``templates/`` folder.

One file per message, ``templates/<name>.yaml``::

    channel: email            # email (default) | sms | push | webhook
    subject: "{{ contact.first_name or 'Hello' }}, we miss you"
    preheader: "A little something to welcome you back"
    html: |
      {% extends "_layout.html" %}
      {% block content %}<p>Hi {{ contact.first_name }}</p>{% endblock %}
    text: |                   # optional: generated from the HTML when absent
      Hi {{ contact.first_name }}

SMS and push templates have ``body`` (and push ``title``, ``url``); webhook templates may
have a JSON ``body``. Files named ``_*.html`` in ``templates/`` are layouts and partials for
``{% extends %}`` and ``{% include %}``. A name not found in the workspace falls back to the
templates shipped in :mod:`winback.delivery.messages.library`.

Every field is rendered by Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` with
``StrictUndefined`` (a misspelt variable is an error, never an empty string); the HTML part is
auto-escaped. The variables are listed in :data:`VARIABLES` and documented in
docs/delivery.md. :func:`validate_template` reports syntax errors and unknown variables with
file and line.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import (
    BaseLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
)
from jinja2.environment import TemplateModule
from jinja2.exceptions import SecurityError
from jinja2.runtime import Macro, new_context
from jinja2.sandbox import SandboxedEnvironment

from winback.channels import CHANNEL_KINDS
from winback.delivery.messages.checks import blocked_constructs, failing_line, sample_context
from winback.delivery.messages.htmltext import html_to_text
from winback.delivery.messages.limits import (
    INTERCEPTED_BINOPS,
    Budget,
    LimitedCodeGenerator,
    RenderLimitExceeded,
    RenderLimits,
    bounded_range,
    check_binop,
    check_call,
    check_result,
    current,
    iterate,
    join_checked,
    limited_filter,
    output_counter,
    render_budget,
)
from winback.delivery.messages.limits import (
    TemplateRenderError as TemplateRenderError,
)
from winback.errors import DefinitionError, NotFound, WinbackError
from winback.store.schema import contacts

LIBRARY = Path(__file__).parent / "library"
RECHECK_SECONDS = 1.0

CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {k.name: k.fields for k in CHANNEL_KINDS}
REQUIRED: dict[str, tuple[str, ...]] = {k.name: k.required for k in CHANNEL_KINDS}
META_KEYS = ("channel", "description")
FIELD_ORDER = ("subject", "preheader", "title", "html", "text", "body", "url")

#: Top-level variables of the render context, with what they hold (docs/delivery.md).
VARIABLES: dict[str, str] = {
    "contact": "the contact's fields (first_name, email, ... and analytics attributes)",
    "custom": "the contact's custom attributes (dict)",
    "tags": "the contact's tags (list of strings)",
    "last_order": "the latest order (order_id, ordered_at, amount, currency, items, coupon) "
    "or none",
    "products": "the items of the latest order (list of dicts; empty when none)",
    "rfm": "RFM scores and segment: r, f, m, segment",
    "analytics": "p_alive, expected_purchases_90d, next_order_expected_at, days_overdue, "
    "expected_spend, clv, cluster, cluster_label",
    "coupon": "the coupon assigned to this message (code) or none",
    "unsubscribe_url": "signed one-click unsubscribe page",
    "feedback_url": "signed hosted feedback page",
    "shop": "name, url and currency (of the workspace) of the shop",
    "message": "id, flow, step, variant, template of this message",
    "data": "extra values the flow put in the message payload (dict)",
    "now": "the send time (aware UTC datetime)",
    "subject": "the rendered subject (in html and text)",
    "preheader": "the rendered preheader (in html and text)",
    "title": "the rendered push title (in body)",
}

#: Fields of ``contact`` (anything else is a custom attribute: use ``custom.NAME``): the
#: columns of the contacts table, and ``full_name``.
CONTACT_FIELDS = frozenset({*contacts.c.keys(), "full_name"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a template file."""

    path: str
    line: int | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class MessageTemplate:
    """A parsed template file: its fields' sources and where each starts in the file."""

    name: str
    path: Path
    channel: str
    fields: dict[str, str]
    first_line: dict[str, int] = field(default_factory=dict)
    mtime: float = 0.0
    _uses: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def uses(self, variable: str) -> bool:
        """Whether any field mentions ``variable`` (asked for every message: remembered)."""
        known = self._uses.get(variable)
        if known is None:
            known = self._uses[variable] = any(variable in src for src in self.fields.values())
        return known


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message rendered for one contact."""

    channel: str
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    title: str = ""
    body: str = ""
    url: str = ""


class _Loader(BaseLoader):
    """``@name/field.ext`` are fields of parsed templates; other names are files (layouts,
    partials) looked up in the workspace's templates/ then the library."""

    def __init__(self, repo: TemplateRepository) -> None:
        self.repo = repo

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template.startswith("@"):
            name, _, rest = template[1:].partition("/")
            fld = rest.rsplit(".", 1)[0]
            tpl = self.repo.get(name)
            src = tpl.fields.get(fld)
            if src is None:
                raise TemplateNotFound(template)
            mtime = tpl.mtime
            return src, str(tpl.path), lambda: _mtime(tpl.path) == mtime
        for folder in self.repo.folders:
            path = inside(folder, template)
            if path is not None and path.is_file():
                mtime = _mtime(path)
                return (
                    path.read_text(encoding="utf-8"),
                    str(path),
                    lambda p=path, m=mtime: _mtime(p) == m,
                )
        raise TemplateNotFound(template)


def inside(folder: Path, name: str) -> Path | None:
    """``folder / name`` when it stays inside ``folder``, else None: an absolute name, a
    ``..`` part or a symbolic link leading out of the folder is refused, so a template can
    include or extend only the templates folder's files and the library's (never
    ``winback.toml`` with its secret key, nor any other file of the host)."""
    relative = Path(name)
    if not name or "\\" in name or relative.is_absolute() or ".." in relative.parts:
        return None
    base = folder.resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) else None


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


_DICT_ATTRIBUTES = frozenset(dir(dict))
_DICT_READERS = frozenset({"get", "items", "keys", "values"})


class Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox with shortcuts for the plain data a render context is made of.

    Every lookup and call in a sandboxed template goes through :meth:`getattr` and
    :meth:`call`, which try the attribute, check it against the sandbox's rules and inspect
    the callable, several function calls each time. For a ``dict`` key, a dict's read-only
    methods, a macro of an imported template and the call of a macro or of those methods,
    the answer of those rules is known in advance; the shortcuts return exactly what the
    general path returns (the tests render every shipped template through both) and leave
    everything else to it."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict:
            if attribute not in _DICT_ATTRIBUTES:
                try:
                    return obj[attribute]
                except KeyError:
                    return self.undefined(obj=obj, name=attribute)
            if attribute in _DICT_READERS:
                return getattr(obj, attribute)
        elif kind is TemplateModule and not attribute.startswith("_"):
            value = obj.__dict__.get(attribute)
            if type(value) is Macro:
                return value
        return super().getattr(obj, attribute)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        kind = type(__obj)
        if kind is Macro or (
            kind is _BuiltinMethod
            and type(__obj.__self__) is dict
            and __obj.__name__ in _DICT_READERS
        ):
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:
                return __self.undefined(
                    "value was undefined because a callable raised a StopIteration exception"
                )
        budget = current(__self.limits)
        check_call(budget, __obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return check_result(budget, result, "a call's result")

    # -- render limits (winback.delivery.messages.limits) --------------------------------
    code_generator_class = LimitedCodeGenerator
    intercepted_binops = INTERCEPTED_BINOPS
    limits = RenderLimits()

    def limit(self, limits: RenderLimits) -> None:
        """Hold every render of this environment to ``limits``: bounded ``range``, no
        ``lipsum``, filters, outputs and captured blocks checked."""
        self.limits = limits
        self.globals["range"] = bounded_range(limits)
        self.globals.pop("lipsum", None)
        self.filters = {
            name: limited_filter(name, func, limits) for name, func in self.filters.items()
        }
        self.finalize = output_counter(limits)
        self.concat = lambda parts: current(limits).collect(parts)  # type: ignore[method-assign]

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = current(self.limits)
        check_binop(budget, operator, left, right)
        budget.check_time()
        return check_result(budget, self.binop_table[operator](left, right), "a result")

    def iterate(self, iterable: Any) -> Iterator[Any]:
        return iterate(self.limits, iterable)

    def join_checked(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        return join_checked(self.limits, join, parts)


_BuiltinMethod = types.BuiltinMethodType


def make_environment(
    loader: BaseLoader | None = None, limits: RenderLimits | None = None
) -> Sandbox:
    """The sandbox of message templates, held to ``limits`` (default: the settings'
    defaults)."""
    env = Sandbox(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name and name.endswith(".html")),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the repository reloads changed files itself (once a second)
        cache_size=-1,  # a plain dict: every include/import/extends looks a template up
    )
    env.filters["money"] = _money
    env.filters["datefmt"] = _datefmt
    env.limit(limits or RenderLimits())
    return env


def _money(value: Any, currency: str = "") -> str:
    try:
        amount = f"{float(value):,.2f}"
    except (TypeError, ValueError):
        return str(value)
    symbols = {"USD": "$", "EUR": "€", "GBP": "£"}
    sym = symbols.get(currency.upper(), "")
    return f"{sym}{amount}" if sym else (f"{amount} {currency}".strip())


def _datefmt(value: Any, fmt: str = "%d %B %Y") -> str:
    return value.strftime(fmt) if hasattr(value, "strftime") else str(value)


class TemplateRepository:
    """Finds, parses, compiles (once; reloaded when the file changes) and renders templates."""

    def __init__(
        self, folder: Path | None, *, library: bool = True, limits: RenderLimits | None = None
    ) -> None:
        self.folders = [f for f in (folder, LIBRARY if library else None) if f is not None]
        self._parsed: dict[str, MessageTemplate] = {}
        self._checked: dict[str, float] = {}
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._compiled: dict[tuple[str, str], tuple[MessageTemplate, Template]] = {}
        self.env = make_environment(_Loader(self), limits)

    # -- lookup -------------------------------------------------------------------------------
    def path_of(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise NotFound(f"bad template name {name!r}")
        for folder in self.folders:
            path = folder / f"{name}.yaml"
            if path.is_file():
                return path
        raise NotFound(
            f"no template {name!r}: looked for {name}.yaml in "
            + ", ".join(str(f) for f in self.folders)
        )

    def names(self) -> list[str]:
        found: set[str] = set()
        for folder in self.folders:
            if folder.is_dir():
                found.update(p.stem for p in folder.glob("*.yaml"))
        return sorted(found)

    def get(self, name: str) -> MessageTemplate:
        """The parsed template; the file is looked at again at most once a second."""
        cached = self._parsed.get(name)
        now = time.monotonic()
        if cached is not None and now - self._checked.get(name, -1.0) < RECHECK_SECONDS:
            return cached
        path = self.path_of(name)
        mtime = _mtime(path)
        self._checked[name] = now
        stamp = self._partials_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self.env.cache.clear()  # type: ignore[union-attr]
            self._compiled.clear()
        if cached is not None and cached.path == path and cached.mtime == mtime:
            return cached
        tpl = parse_template_file(name, path)
        tpl.mtime = mtime
        self._parsed[name] = tpl
        return tpl

    def _partials_stamp(self) -> tuple[tuple[str, float], ...]:
        return tuple(
            (str(p), _mtime(p))
            for folder in self.folders
            if folder.is_dir()
            for p in sorted(folder.glob("_*"))
        )

    def _field(self, tpl: MessageTemplate, fld: str) -> Template:
        hit = self._compiled.get((tpl.name, fld))
        if hit is not None and hit[0] is tpl:
            return hit[1]
        ext = "html" if fld == "html" else "txt"
        compiled = self.env.get_template(f"@{tpl.name}/{fld}.{ext}")
        self._compiled[(tpl.name, fld)] = (tpl, compiled)
        return compiled

    # -- rendering ----------------------------------------------------------------------------
    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        """Render every field of template ``name`` under one render budget (see
        :mod:`winback.delivery.messages.limits`); a limit exceeded is a
        :class:`RenderLimitExceeded` naming the file, field and limit."""
        with render_budget(self.env.limits) as budget:
            return self._render(self.get(name), context, budget)

    def _render(self, tpl: MessageTemplate, context: Mapping[str, Any], budget: Budget) -> Rendered:
        out: dict[str, str] = {}
        env = self.env
        # One context for the fields, shared by their renders (each still gets its own
        # Context, so a {% set %} in one field stays there): Template.render would copy it
        # twice per field, merging the environment's globals each time.
        shared = dict(env.globals)
        shared.update(context)
        for key in ("subject", "preheader", "title"):
            shared.setdefault(key, "")
        for fld in _field_order(tuple(tpl.fields)):
            try:
                compiled = self._field(tpl, fld)
                try:
                    out[fld] = budget.collect(
                        compiled.root_render_func(
                            new_context(env, compiled.name, compiled.blocks, shared, True)
                        )
                    )
                except RenderLimitExceeded:
                    raise
                except Exception:  # again through Jinja's entry point, for its error report
                    out[fld] = compiled.render(shared)
                if fld in ("subject", "preheader", "title"):
                    shared[fld] = " ".join(out[fld].split())
            except TemplateNotFound as exc:
                raise TemplateRenderError(
                    f"{tpl.path} ({fld}): no template {exc.name!r} in "
                    + " or ".join(str(f) for f in self.folders)
                    + " (names are relative to these folders; absolute paths, '..' and links "
                    "leading out of them are refused)"
                ) from exc
            except RenderLimitExceeded as exc:
                raise self._located(RenderLimitExceeded, exc, tpl, fld) from None
            except (
                UndefinedError,
                SecurityError,
                TypeError,
                ValueError,
                ArithmeticError,
                RecursionError,
            ) as exc:
                raise self._located(TemplateRenderError, exc, tpl, fld) from exc
            except TemplateSyntaxError as exc:
                raise DefinitionError(
                    exc.message or str(exc),
                    path=str(tpl.path),
                    location=str(tpl.first_line.get(fld, 1) + (exc.lineno or 1) - 1),
                ) from exc
        if tpl.channel == "email":
            out["subject"] = " ".join(out.get("subject", "").split())
            out["preheader"] = " ".join(out.get("preheader", "").split())
            if not out.get("text"):
                out["text"] = html_to_text(out.get("html", ""))
        return Rendered(channel=tpl.channel, **out)

    def _located(
        self,
        kind: type[TemplateRenderError],
        exc: BaseException,
        tpl: MessageTemplate,
        fld: str,
    ) -> TemplateRenderError:
        """``exc`` as a ``kind`` naming the file and line it was raised at: a line of the
        field in the template file, or of a layout or partial."""
        files = {str(tpl.path)} | {
            str(p) for folder in self.folders if folder.is_dir() for p in folder.glob("_*")
        }
        where = failing_line(exc, files)
        if where is None:
            path, line = str(tpl.path), tpl.first_line.get(fld)
        elif where[0] == str(tpl.path):
            path, line = where[0], tpl.first_line.get(fld, 1) + where[1] - 1
        else:
            path, line = where
        shown = f"{path}:{line}" if line else path
        return kind(f"{shown} ({fld}): {exc}", path=path, line=line)

    def validate(self, name: str, *, now: datetime | None = None) -> list[Problem]:
        """Problems of template ``name``, each with file and line: YAML and syntax errors,
        unknown variables and fields, layouts and partials not found or outside the
        allowed folders, every construct the sandbox or the render limits would refuse
        (:mod:`winback.delivery.messages.checks`); when there is none, the problem a
        render for a sample contact under the same limits meets, if any."""
        problems = self._static_problems(name)
        if problems:
            return problems
        try:
            self.render(name, sample_context(now or datetime.now(UTC)))
        except TemplateRenderError as exc:
            path = exc.path or str(self.path_of(name))
            detail = str(exc).split("): ", 1)[-1]
            return [Problem(path, exc.line, f"rendering for a sample contact: {detail}")]
        except WinbackError as exc:
            return [Problem(str(self.path_of(name)), None, f"rendering: {exc}")]
        return []

    def _static_problems(self, name: str) -> list[Problem]:
        try:
            path = self.path_of(name)
        except NotFound as exc:
            return [Problem(name, None, str(exc))]
        try:
            tpl = parse_template_file(name, path)
        except DefinitionError as exc:
            line = int(exc.location) if exc.location and exc.location.isdigit() else None
            return [Problem(str(path), line, str(exc).split(": ", 1)[-1])]
        problems: list[Problem] = []
        for fld, src in tpl.fields.items():
            base = tpl.first_line.get(fld, 1)
            try:
                ast = self.env.parse(src)
            except TemplateSyntaxError as exc:
                problems.append(
                    Problem(str(path), base + (exc.lineno or 1) - 1, f"{fld}: {exc.message}")
                )
                continue
            problems.extend(self._check_ast(ast, path, fld, base, set()))
        return problems

    def _check_ast(
        self, ast: nodes.Template, path: Path, fld: str, base: int, seen: set[str]
    ) -> Iterator[Problem]:
        from jinja2 import meta

        undeclared = meta.find_undeclared_variables(ast) - set(self.env.globals)
        for line, message in blocked_constructs(ast, self.env.limits):
            yield Problem(str(path), base + line - 1, f"{fld}: {message}")
        for node in ast.find_all(nodes.Name):
            if node.ctx == "load" and node.name in undeclared and node.name not in VARIABLES:
                yield Problem(
                    str(path),
                    base + node.lineno - 1,
                    f"{fld}: unknown variable {node.name!r} (known: {', '.join(VARIABLES)})",
                )
                undeclared.discard(node.name)
        for getattr_node in ast.find_all(nodes.Getattr):
            target = getattr_node.node
            if (
                isinstance(target, nodes.Name)
                and target.name == "contact"
                and getattr_node.attr not in CONTACT_FIELDS
            ):
                yield Problem(
                    str(path),
                    base + getattr_node.lineno - 1,
                    f"{fld}: contact has no field {getattr_node.attr!r}; custom attributes "
                    f"are custom.{getattr_node.attr}",
                )
        kinds = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
        for use in ast.find_all(kinds):
            name = getattr(use, "template", None)  # every one of ``kinds`` has it
            if not (isinstance(name, nodes.Const) and isinstance(name.value, str)):
                continue  # a computed name: checked when rendered
            ref = name.value
            if ref in seen:
                continue
            seen.add(ref)
            try:
                src, filename, _ = self.env.loader.get_source(self.env, ref)  # type: ignore[union-attr]
            except TemplateNotFound:
                yield Problem(
                    str(path),
                    base + use.lineno - 1,
                    f"{fld}: layout or partial {ref!r} not found in the templates folder or "
                    "the library (names are relative to them; absolute paths, '..' and links "
                    "leading out are refused)",
                )
                continue
            try:
                sub = self.env.parse(src)
            except TemplateSyntaxError as exc:
                yield Problem(filename or ref, exc.lineno, exc.message or str(exc))
                continue
            yield from self._check_ast(sub, Path(filename or ref), "layout", 1, seen)


@lru_cache(maxsize=256)
def _field_order(fields: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(fields, key=lambda f: FIELD_ORDER.index(f) if f in FIELD_ORDER else 9))


def parse_template_file(name: str, path: Path) -> MessageTemplate:
    """Parse a template YAML file, keeping each field's first line for error messages."""
    data, lines = _load_yaml(path)
    channel = str(data.get("channel", "email"))
    if channel not in CHANNEL_FIELDS:
        raise DefinitionError(
            f"channel {channel!r} is not one of {', '.join(CHANNEL_FIELDS)}",
            path=str(path),
            location=str(lines.get("channel", 1) - 0),
        )
    fields = _fields(data, channel, path, lines)
    for key in REQUIRED[channel]:
        if not fields.get(key):
            raise DefinitionError(
                f"a {channel} template needs {key!r}", path=str(path), location="1"
            )
    return MessageTemplate(name, path, channel, fields, lines)


def _load_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping, and the first line of each key's value."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read: {exc}", path=str(path)) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = str(mark.line + 1) if mark is not None else None
        raise DefinitionError(f"not valid YAML: {exc}", path=str(path), location=line) from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise DefinitionError(
            "expected a mapping with subject/html/... keys", path=str(path), location="1"
        )
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        first = value_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode) and value_node.style in ("|", ">"):
            first += 1
        lines[str(key_node.value)] = first
    return data, lines


def _fields(
    data: dict[str, Any], channel: str, path: Path, lines: dict[str, int]
) -> dict[str, str]:
    """The template's text fields, each a key a ``channel`` template may set."""
    allowed = CHANNEL_FIELDS[channel]
    fields: dict[str, str] = {}
    for key, value in data.items():
        if key in META_KEYS:
            continue
        if key not in allowed:
            raise DefinitionError(
                f"unknown key {key!r} for a {channel} template (expected {', '.join(allowed)})",
                path=str(path),
                location=str(lines.get(key, 1)),
            )
        if not isinstance(value, str):
            raise DefinitionError(
                f"{key} must be text, got {type(value).__name__}",
                path=str(path),
                location=str(lines.get(key, 1)),
            )
        fields[key] = value
    return fields


def validate_template(name: str, folder: Path | None = None) -> list[Problem]:
    """Problems of template ``name`` (workspace folder, then the library): syntax errors and
    unknown variables, each with file and line. Empty when the template is fine."""
    return TemplateRepository(folder).validate(name)
