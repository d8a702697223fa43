"""Templates cannot exhaust the host or reach outside the sandbox: render limits (sizes,
loops, output, time) with the real loader on real files, `templates validate` reporting
each of 14 hostile templates with file and line, and the delivery worker failing only the
message whose template breaks a limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.delivery_support import add_contact, add_message, configure, outbox_row, smtp_server
from winback.cli import app
from winback.delivery.messages.limits import RenderLimitExceeded, RenderLimits
from winback.delivery.messages.templates import TemplateRenderError, TemplateRepository
from winback.workspace import Workspace

#: Each hostile template (an SMS body, so that the line is 3 + its line in the body), the
#: line validate must name, and words its message must contain.
HOSTILE: dict[str, tuple[str, int, str]] = {
    "include-absolute": ('{% include "/etc/hostname" %}', 4, "refused"),
    "include-parent": ('{% include "../winback.toml" %}', 4, "refused"),
    "include-link": ('{% include "linked.html" %}', 4, "refused"),
    "repeat": ("hi\n  {{ 'a' * 300000000 }}", 5, "render_max_value_size"),
    "nested-loops": (
        "{% for i in range(100000) %}\n  {% for j in range(100000) %}x{% endfor %}\n  {% endfor %}",
        5,
        "render_max_loop_iterations",
    ),
    "huge-range": ("{% for i in range(10**9) %}{{ i }}{% endfor %}", 4, "range of 1,000,000,000"),
    "dunder-mro": ("{{ ''.__class__.__mro__ }}", 4, "'__class__' is private"),
    "dunder-globals": ("{{ cycler.__init__.__globals__ }}", 4, "'__init__' is private"),
    "private-item": ("{{ shop['_sa_instance'] }}", 4, "'_sa_instance' is private"),
    "unknown-field": ("{{ shop.owner_password }}", 4, "shop has no field 'owner_password'"),
    "center": ("{{ 'a' | center(300000000) }}", 4, "center filter"),
    "power": ("{{ 10 ** 10000000 }}", 4, "a power of about"),
    "format-width": ("{{ '%0300000000d' % 1 }}", 4, "format width"),
    "doubling": (
        "{% set ns = namespace(s=contact.first_name) %}\n"
        "  {% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        5,
        "render_max_value_size",
    ),
}


def _write(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.yaml").write_text(
        f"channel: sms\ndescription: hostile\nbody: |\n  {body}\n", encoding="utf-8"
    )


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (tmp_path / "winback.toml").write_text('secret_key = "do-not-leak"\n', encoding="utf-8")
    (folder / "linked.html").symlink_to(tmp_path / "winback.toml")
    for name, (body, _line, _words) in HOSTILE.items():
        _write(folder, name, body)
    _write(folder, "fine", "Hi {{ contact.first_name }}, {{ shop.name }}: {{ coupon.code }}")
    return folder


def test_validate_reports_each_hostile_template_with_file_and_line(hostile: Path) -> None:
    repo = TemplateRepository(hostile, library=False)
    assert len(HOSTILE) == 14
    for name, (_body, line, words) in HOSTILE.items():
        started = time.monotonic()
        problems = repo.validate(name)
        assert time.monotonic() - started < 5, name
        found = [p for p in problems if words in p.message]
        assert found, (name, problems)
        assert (found[0].path, found[0].line) == (str(hostile / f"{name}.yaml"), line), name
        assert all("do-not-leak" not in str(p) for p in problems)
    assert repo.validate("fine") == []


def test_rendering_stops_each_hostile_template_at_a_limit(hostile: Path) -> None:
    repo = TemplateRepository(hostile, library=False)
    from datetime import UTC, datetime

    from winback.delivery.messages.checks import sample_context

    context = sample_context(datetime(2026, 1, 1, tzinfo=UTC))
    for name in HOSTILE:
        started = time.monotonic()
        with pytest.raises(TemplateRenderError) as refused:
            repo.render(name, context)
        assert time.monotonic() - started < 3, name
        assert "do-not-leak" not in str(refused.value)
    assert repo.render("fine", context).body.startswith("Hi Sam")


def test_render_limits_are_the_settings(tmp_path: Path) -> None:
    """Output, value size and loop limits come from RenderLimits; a render over the time
    budget is stopped (cooperatively) close to it."""
    _write(tmp_path, "loop", "{% for i in range(n) %}{{ 'ab' * 10 }}{% endfor %}")
    _write(
        tmp_path, "spin", "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}"
    )
    tight = TemplateRepository(
        tmp_path, library=False, limits=RenderLimits(output_chars=1000, value_size=500)
    )
    assert len(tight.render("loop", {"n": 40}).body) == 800
    with pytest.raises(RenderLimitExceeded, match="longer than 1,000 characters"):
        tight.render("loop", {"n": 60})
    with pytest.raises(RenderLimitExceeded, match="a range would be 501"):
        tight.render("loop", {"n": 501})
    slow = TemplateRepository(
        tmp_path,
        library=False,
        limits=RenderLimits(value_size=100_000, loop_iterations=10**12, seconds=0.3),
    )
    started = time.monotonic()
    with pytest.raises(RenderLimitExceeded, match=r"longer than 0.3 s .*render_timeout_seconds"):
        slow.render("spin", {"n": 100_000})
    assert 0.3 <= time.monotonic() - started < 1.5


def test_the_worker_fails_only_the_message_whose_template_breaks_a_limit(
    workspace: Workspace,
) -> None:
    folder = workspace.path / "templates"
    (folder / "greedy.yaml").write_text(
        "subject: 'Hi {{ contact.first_name }}'\n"
        "html: |\n"
        "  <p>{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}"
        "{% endfor %}</p>\n",
        encoding="utf-8",
    )
    ids = [
        add_contact(workspace, f"c{n}", email=f"p{n}@example.com", first_name=f"P{n}")
        for n in range(3)
    ]
    with smtp_server() as (url, inbox, _):
        ws = configure(workspace, smtp_url=url, quiet_hours="", frequency_caps={})
        messages = [
            add_message(ws, ids[0], "reactivation-1", key="k0"),
            add_message(ws, ids[1], "greedy", key="k1"),
            add_message(ws, ids[2], "reactivation-1", key="k2"),
        ]
        started = time.monotonic()
        report = ws.delivery.deliver_due()
        took = time.monotonic() - started
    assert report.counts == {"sent": 2, "failed": 1} and len(inbox.messages) == 2
    assert sorted(m["To"] for m in inbox.messages) == ["p0@example.com", "p2@example.com"]
    failed = outbox_row(ws, messages[1])
    assert failed["status"] == "failed"
    assert "render_max_loop_iterations" in failed["last_error"]
    assert "greedy.yaml:3 (html)" in failed["last_error"]
    assert took < 10


def test_cli_validate_names_file_and_line_and_exits_1(sqlite_workspace: Workspace) -> None:
    folder = sqlite_workspace.path / "templates"
    for name in ("repeat", "dunder-mro", "doubling"):
        _write(folder, name, HOSTILE[name][0])
    result = CliRunner().invoke(
        app, ["templates", "validate", "--workspace", str(sqlite_workspace.path)]
    )
    assert result.exit_code == 1
    for name in ("repeat", "dunder-mro", "doubling"):
        _body, line, words = HOSTILE[name]
        assert f"{folder / name}.yaml:{line}: error: " in result.output, name
        assert words in result.output, name
