"""The Templates pages on a real service: the list, a message rendered for a chosen contact
through delivery's sandbox at desktop and phone width in sandboxed frames, a template's
error shown with its file and line, and a message's script that cannot run."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import T0
from tests.dashboard_support import cli_json, reader, within
from tests.flows.helpers import make_contacts
from tests.web_support import running_service
from winback.workspace import Workspace

DAY = timedelta(days=1)
CHROMIUM = Path("/usr/bin/chromium")

#: A message that tries to run a script and to reach the dashboard around it.
HOSTILE = """\
subject: "Hello {{ contact.first_name }}"
html: |
  <html><body>
  <p id="greeting">Hello {{ contact.first_name }}</p>
  <script>document.body.setAttribute("data-ran", "yes"); parent.document.title = "pwned";</script>
  <img src="x" onerror="document.body.setAttribute('data-ran', 'yes')">
  </body></html>
"""

BROKEN = """\
subject: "Hello"
html: |
  <p>Hello</p>
  <p>{{ custom.loyalty.tier }}</p>
"""


def _frames(page: str) -> list[str]:
    return re.findall(r"<iframe[^>]*>", page)


def test_a_message_is_rendered_for_a_chosen_contact_in_sandboxed_frames(
    workspace: Workspace,
) -> None:
    ws = workspace
    (cid,) = make_contacts(ws, 1, at=T0 - DAY, first_name="Ada")
    with running_service(ws) as base:
        headers = reader(ws)
        by_email = httpx.get(
            f"{base}/templates/reactivation-1",
            params={"contact": "c0@example.com"},
            headers=headers,
        )
        by_id = httpx.get(f"{base}/templates/reactivation-1?contact={cid}", headers=headers)
        sample = httpx.get(f"{base}/templates/reactivation-1", headers=headers)
        unknown = httpx.get(f"{base}/templates/reactivation-1?contact=nobody", headers=headers)
        missing = httpx.get(f"{base}/templates/no-such-template", headers=headers)
        listed = httpx.get(f"{base}/templates", headers=headers)
        contact_page = httpx.get(f"{base}/contacts/{cid}", headers=headers).text
        chosen = httpx.get(
            f"{base}/templates",
            params={"template": "reactivation-1", "contact": f"#{cid}"},
            headers=headers,
            follow_redirects=True,
        )
    assert by_email.status_code == by_id.status_code == 200
    page = by_email.text
    assert 'data-figure="subject">Ada, it&#39;s been a while<' in page
    frames = _frames(page)
    assert len(frames) == 2  # desktop and phone
    for frame in frames:
        sandbox = re.search(r'\ssandbox(="([^"]*)")?[\s>]', frame)
        assert sandbox is not None and not sandbox.group(2)  # nothing allowed: no scripts
    assert 'width="390"' in frames[1]
    srcdoc = html.unescape(re.search(r'srcdoc="([^"]*)"', frames[0]).group(1))  # type: ignore[union-attr]
    assert "Ada" in srcdoc and "</html>" in srcdoc.lower()
    policy = by_email.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data:" in policy
    # The same message as the CLI renders for that contact.
    rendered = cli_json(ws, "templates", "render", "reactivation-1", "--contact", "c0")
    assert srcdoc == rendered["html"]
    assert html.unescape(within(page, 'data-figure="text">', "</pre>")).endswith(rendered["text"])
    assert by_id.text.count("Ada, it&#39;s been a while") == 1
    assert "a sample contact" in sample.text and "Sam" in sample.text
    assert "No such contact" in unknown.text and "nobody" in unknown.text
    assert missing.status_code == 404
    # A contact's page offers every template; its form leads to that contact's preview.
    assert "<option>reactivation-1</option>" in contact_page
    assert chosen.status_code == 200 and str(chosen.url).endswith(
        f"/templates/reactivation-1?contact=%23{cid}"
    )
    assert 'data-figure="subject">Ada, it&#39;s been a while<' in chosen.text
    names = [t["name"] for t in cli_json(ws, "templates", "list")]
    assert re.findall(r'<tr data-template="([^"]+)">', listed.text) == names


def test_the_message_is_escaped_into_the_frame(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    (ws.path / "templates" / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
    make_contacts(ws, 1, at=T0 - DAY, first_name='"><script>alert(1)</script>')
    with running_service(ws) as base:
        page = httpx.get(f"{base}/templates/hostile?contact=c0", headers=reader(ws)).text
    # Nothing of the message reaches the page as markup: only inside the srcdoc attribute.
    assert "<script>document" not in page and "<script>alert" not in page
    assert page.count("<script") == 1  # the dashboard's own htmx
    srcdoc = html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))  # type: ignore[union-attr]
    assert '<script>document.body.setAttribute("data-ran"' in srcdoc  # the message as it is
    assert "&lt;script&gt;alert(1)" in srcdoc  # the contact's name escaped by the template


def test_a_template_error_shows_its_file_and_line(sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    (ws.path / "templates" / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    (ws.path / "templates" / "unclosed.yaml").write_text(
        'subject: "Hi"\nhtml: |\n  <p>{% if contact.first_name %}Hi</p>\n', encoding="utf-8"
    )
    (ws.path / "templates" / "huge.yaml").write_text(
        'subject: "Hi"\nhtml: |\n  <p>Hi</p>\n  {{ "x" * 100000000 }}\n', encoding="utf-8"
    )
    make_contacts(ws, 1, at=T0 - DAY)
    with running_service(ws) as base:
        headers = reader(ws)
        broken = httpx.get(f"{base}/templates/broken?contact=c0", headers=headers)
        unclosed = httpx.get(f"{base}/templates/unclosed?contact=c0", headers=headers)
        huge = httpx.get(f"{base}/templates/huge?contact=c0", headers=headers)
    assert broken.status_code == 200
    assert 'role="alert"' in broken.text and "<iframe" not in broken.text
    assert re.search(r'data-figure="error.path">[^<]*broken\.yaml<', broken.text)
    assert 'data-figure="error.line">4<' in broken.text  # {{ custom.loyalty.tier }}
    assert "loyalty" in broken.text
    assert unclosed.status_code == 200
    assert re.search(r'data-figure="error.path">[^<]*unclosed\.yaml<', unclosed.text)
    assert 'data-figure="error.line">' in unclosed.text
    # Delivery's render limits hold in the preview too.
    assert huge.status_code == 200 and 'data-figure="error.line">4<' in huge.text
    assert "render_max_value_size" in huge.text and "<iframe" not in huge.text


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_a_script_in_a_message_cannot_run(sqlite_workspace: Workspace) -> None:
    from playwright.sync_api import sync_playwright

    ws = sqlite_workspace
    (ws.path / "templates" / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
    make_contacts(ws, 1, at=T0 - DAY, first_name="Ada")
    headers = reader(ws)
    outside: list[str] = []
    with running_service(ws) as base, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page(extra_http_headers=headers)
            page.on(
                "request",
                lambda r: (
                    outside.append(r.url)
                    if not r.url.startswith((base, "data:", "about:"))
                    else None
                ),
            )
            page.goto(f"{base}/templates/hostile?contact=c0")
            page.wait_for_load_state("load")
            frames = [f for f in page.frames if f != page.main_frame]
            assert len(frames) == 2
            for frame in frames:
                assert frame.locator("#greeting").inner_text() == "Hello Ada"
                assert frame.locator("body").get_attribute("data-ran") is None
            assert page.title() != "pwned"
        finally:
            browser.close()
    assert outside == []
