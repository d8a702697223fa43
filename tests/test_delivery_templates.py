"""Message templates: the shipped library renders and validates; errors name file and line;
the sandbox holds; the CLI previews."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape
from typer.testing import CliRunner

from tests.delivery_support import add_contact
from winback.cli import app
from winback.config import Settings
from winback.delivery import validate_template
from winback.delivery.messages.context import ContactData, render_context
from winback.delivery.messages.htmltext import html_to_text
from winback.delivery.messages.templates import LIBRARY, TemplateRenderError, TemplateRepository
from winback.workspace import Workspace

SHIPPED = [
    "reactivation-1",
    "reactivation-2",
    "feedback-request",
    "feedback-reminder",
    "feedback-coupon",
    "browse-abandonment",
    "second-purchase",
    "sunset-last-chance",
    "cadence-nudge",
    "post-holiday",
    "birthday",
    "feedback-reminder-clicked",
    "feedback-reminder-last",
    "no-clicks-another-chance",
    "sales-follow-up",
    "sales-follow-up-last",
    "first-order-anniversary",
]


def _context(**contact: object) -> dict[str, object]:
    person = {"id": 1, "first_name": "Ada", "email": "ada@example.com", "attributes": {}}
    person.update(contact)
    order = {
        "order_id": "o1",
        "ordered_at": datetime(2026, 1, 2, tzinfo=UTC),
        "amount": 30,
        "currency": "EUR",
        "items": [{"name": "Blue <mug>", "price": 12.5, "url": "https://shop.example/mug"}],
        "coupon": None,
    }
    return render_context(
        ContactData(person, order, ["vip"]),
        settings=Settings(secret_key="k", shop_name="Mugs & Co"),
        message={"id": 9, "flow": "f", "step": "s", "payload": {"data": {}}},
        now=datetime(2026, 3, 1, tzinfo=UTC),
        coupon="WB-TEST1234",
        unsubscribe_url="https://t.example/u/x",
        feedback_url="https://t.example/f/y",
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_templates_validate_and_render(name: str) -> None:
    assert (LIBRARY / f"{name}.yaml").is_file()
    assert validate_template(name) == []
    repo = TemplateRepository(None)
    r = repo.render(name, _context())
    assert r.subject and r.preheader and "{{" not in r.html
    assert "<table" in r.html and 'name="color-scheme"' in r.html  # responsive, dark mode
    assert "prefers-color-scheme: dark" in r.html and "@media (max-width" in r.html
    assert str(escape(r.preheader)) in r.html  # the hidden preheader
    assert "https://t.example/u/x" in r.html  # unsubscribe in every footer
    assert "Mugs &amp; Co" in r.html and "Mugs & Co" in r.text  # escaped in HTML only
    assert r.preheader not in r.text.split("\n")[0]
    # Without a first name nothing breaks (StrictUndefined would raise on a typo).
    assert repo.render(name, _context(first_name=None)).subject


@pytest.mark.parametrize("name", SHIPPED)
def test_sandbox_shortcuts_render_what_jinja_sandbox_renders(name: str) -> None:
    """The Sandbox's shortcuts (dict keys, dict readers, macros) give exactly the output of
    Jinja2's own SandboxedEnvironment, for every shipped template."""
    ours = TemplateRepository(None)
    reference = TemplateRepository(None)
    # the general path for every lookup
    reference.env.__class__ = SandboxedEnvironment  # type: ignore[assignment]
    for context in (_context(), _context(first_name=None, locale="fr_FR")):
        assert ours.render(name, context) == reference.render(name, context)


def test_sandbox_shortcuts_keep_the_rules(tmp_path: Path) -> None:
    (tmp_path / "dicts.yaml").write_text(
        "subject: \"{{ contact.get('first_name') }} {{ custom.items() | list }} "
        "{{ contact.first_name }}\"\nhtml: '{{ data.nope }}'\n",
        encoding="utf-8",
    )
    (tmp_path / "dunder.yaml").write_text(
        'subject: "{{ contact.__class__ }}"\nhtml: x\n', encoding="utf-8"
    )
    (tmp_path / "mro.yaml").write_text(
        'subject: "{{ contact.items.__self__.__class__.__mro__ }}"\nhtml: x\n',
        encoding="utf-8",
    )
    repo = TemplateRepository(tmp_path)
    context = _context(attributes={"tier": "gold"})
    context["custom"] = {"tier": "gold"}
    with pytest.raises(TemplateRenderError, match="nope"):  # a missing key stays an error
        repo.render("dicts", context)
    (tmp_path / "dicts.yaml").write_text(
        "subject: \"{{ contact.get('first_name') }} {{ custom.items() | list }} "
        '{{ contact.first_name }}"\nhtml: x\n',
        encoding="utf-8",
    )
    repo = TemplateRepository(tmp_path)
    assert repo.render("dicts", context).subject == "Ada [('tier', 'gold')] Ada"
    for name in ("dunder", "mro"):
        with pytest.raises(TemplateRenderError, match="unsafe|__class__|__self__"):
            repo.render(name, context)


def test_product_names_are_escaped() -> None:
    r = TemplateRepository(None).render("reactivation-1", _context())
    assert "Blue &lt;mug&gt;" in r.html and "Blue <mug>" in r.text


def test_validation_reports_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "subject: Hello {{ contact.first_name }}\n"
        "html: |\n"
        "  <p>line one</p>\n"
        "  <p>{{ contcat.first_name }}</p>\n"
        "  <p>{{ contact.favourite_colour }}</p>\n",
        encoding="utf-8",
    )
    (tmp_path / "broken.yaml").write_text(
        "subject: ok\nhtml: |\n  <p>fine</p>\n  {% if x %}\n  <p>never closed</p>\n",
        encoding="utf-8",
    )
    (tmp_path / "notyaml.yaml").write_text("subject: [unclosed\nhtml: x\n", encoding="utf-8")
    repo = TemplateRepository(tmp_path)
    problems = repo.validate("bad")
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [(4, "html"), (5, "html")]
    assert "unknown variable 'contcat'" in problems[0].message
    assert "custom.favourite_colour" in problems[1].message
    assert str(problems[0]).startswith(f"{tmp_path / 'bad.yaml'}:4: error:")
    [syntax] = repo.validate("broken")
    assert syntax.line is not None and syntax.line >= 4 and "endif" in syntax.message
    [yaml_problem] = repo.validate("notyaml")
    assert "not valid YAML" in yaml_problem.message and yaml_problem.line == 2


def test_strict_undefined_and_sandbox(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "subject: '{{ contact.nope }}'\nhtml: '<p>x</p>'\n", encoding="utf-8"
    )
    (tmp_path / "evil.yaml").write_text(
        "subject: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\nhtml: x\n",
        encoding="utf-8",
    )
    repo = TemplateRepository(tmp_path)
    with pytest.raises(TemplateRenderError, match="nope"):
        repo.render("t", _context())
    with pytest.raises(TemplateRenderError, match="unsafe|__class__"):
        repo.render("evil", _context())


def test_includes_stay_inside_the_templates_folder_and_the_library(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    secret = tmp_path / "winback.toml"
    secret.write_text('secret_key = "do-not-leak"\n', encoding="utf-8")
    (folder / "_ok.html").write_text("<b>partial {{ contact.first_name }}</b>", encoding="utf-8")
    (folder / "linked.html").symlink_to(secret)
    includes = {
        "absolute": str(secret),
        "parent": "../winback.toml",
        "link": "linked.html",
        "host": "/etc/hostname",
    }
    for name, target in {**includes, "ok": "_ok.html"}.items():
        (folder / f"{name}.yaml").write_text(
            f"subject: hi\nhtml: '<p>{{% include \"{target}\" %}}</p>'\n", encoding="utf-8"
        )
    repo = TemplateRepository(folder)
    assert "partial Ada" in repo.render("ok", _context()).html
    for name, target in includes.items():
        with pytest.raises(TemplateRenderError, match="refused") as refused:
            repo.render(name, _context())
        assert target in str(refused.value) and "do-not-leak" not in str(refused.value)
        [problem] = repo.validate(name)
        assert problem.line == 2 and target in problem.message and "refused" in problem.message
    assert repo.validate("ok") == []


def test_workspace_templates_override_the_library(tmp_path: Path) -> None:
    (tmp_path / "birthday.yaml").write_text(
        "subject: 'Ours, {{ contact.first_name }}'\nhtml: |\n  {% extends \"_layout.html\" %}\n"
        "  {% block content %}<p>custom</p>{% endblock %}\n",
        encoding="utf-8",
    )
    r = TemplateRepository(tmp_path).render("birthday", _context())
    assert r.subject == "Ours, Ada" and "custom" in r.html and "custom" in r.text


def test_html_to_text() -> None:
    text = html_to_text(
        "<html><head><style>p{}</style></head><body><div data-text-skip>pre</div>"
        "<h1>Hi &amp; welcome</h1><p>Go <a href='https://x.example/a?b=1&amp;c=2'>here</a>"
        "</p><ul><li>one</li><li>two</li></ul></body></html>"
    )
    assert text == "Hi & welcome\n\nGo here (https://x.example/a?b=1&c=2)\n\n- one\n- two\n"


def test_cli_render_and_validate(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    add_contact(sqlite_workspace, "c-42", email="ada@example.com", first_name="Ada")
    runner = CliRunner()
    ws = ["--workspace", str(sqlite_workspace.path)]
    out = tmp_path / "out.html"
    result = runner.invoke(
        app, ["templates", "render", "reactivation-2", "--contact", "c-42", "--html", str(out), *ws]
    )
    assert result.exit_code == 0, result.output
    assert "Subject: A little something to welcome you back, Ada" in result.output
    assert "PREVIEW-COUPON" in result.output and "<table" in out.read_text()
    result = runner.invoke(app, ["templates", "validate", "--json", *ws])
    assert result.exit_code == 0 and json.loads(result.output) == []
    (sqlite_workspace.path / "templates" / "oops.yaml").write_text(
        "subject: '{{ shop.name }}'\nhtml: '{{ cupon }}'\n", encoding="utf-8"
    )
    result = runner.invoke(app, ["templates", "validate", *ws])
    assert result.exit_code == 1 and "oops.yaml:2" in result.output and "cupon" in result.output
