"""A small generated shop for the dashboard's page tests (:func:`small_shop`), and reading
the pages: the figures a page shows (``data-figure`` with its
``data-value``), the CLI's ``--json`` answer for the same workspace, and a signed-in session
when the dashboard has one."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from tests.conftest import T0
from tests.flows.helpers import add_order, make_contacts
from tests.web_support import new_api_key
from winback.cli import app
from winback.clock import FixedClock
from winback.flows.runner import run_once
from winback.generator import generate_shop
from winback.store.apikeys import Scope
from winback.workspace import Workspace

DAY = timedelta(days=1)


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []
        self._text: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        name = found.get("data-figure")
        if name is not None:
            if "data-value" in found:
                self.figures[name] = found["data-value"] or ""
            else:
                self._open.append((tag, name))
                self._text[name] = ""

    def handle_data(self, data: str) -> None:
        for _, name in self._open:
            if name is not None:
                self._text[name] += data

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            _, name = self._open.pop()
            if name is not None:
                self.figures[name] = self._text.pop(name).strip()


def figures(html: str) -> dict[str, str]:
    """``data-figure`` name -> its ``data-value`` (or its text) in a page."""
    parser = _Figures()
    parser.feed(html)
    return parser.figures


def within(html: str, start: str, end: str) -> str:
    """The part of ``html`` from the first ``start`` to the next ``end``."""
    at = html.index(start)
    return html[at : html.index(end, at)]


def csrf_field(html: str) -> str | None:
    """The value of the page's first hidden ``csrf_token`` field, if it has one."""
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    return found.group(1) if found else None


def cli_json(ws: Workspace, *args: str) -> Any:
    """The CLI's ``--json`` answer for ``ws`` (in this process, with the workspace's store)."""
    result = CliRunner().invoke(
        app,
        [*args, "-w", str(ws.path), "--json"],
        env={"WINBACK_DATABASE_URL": ws.database_url},
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def reader(ws: Workspace, scope: Scope = Scope.READ) -> dict[str, str]:
    """Headers of a dashboard request made with a new API key of ``scope`` (``read`` to look,
    ``manage`` for a page's actions)."""
    return {"Authorization": f"Bearer {new_api_key(ws, f'dashboard-{scope}-{id(ws)}', scope)}"}


def session(ws: Workspace, base: str) -> httpx.Client:
    """A client signed in to the dashboard as a new user (made by ``winback users add``)."""
    result = CliRunner().invoke(
        app,
        ["users", "add", "marketer", "--password-stdin", "-w", str(ws.path)],
        input="a long enough password 42\n",
        env={"WINBACK_DATABASE_URL": ws.database_url},
    )
    assert result.exit_code == 0, result.output
    form = {"username": "marketer", "password": "a long enough password 42"}
    with httpx.Client(base_url=base) as signing_in:
        token = csrf_field(signing_in.get("/login").text)
        assert token is not None, "the login form carries a CSRF token"
        form["csrf_token"] = token
        answer = signing_in.post("/login", data=form, follow_redirects=False)
        assert answer.status_code in (302, 303), answer.text
        cookies = signing_in.cookies
    return httpx.Client(base_url=base, cookies=cookies)  # not opened yet: `with` works


def drive(ws: Workspace, clock: FixedClock, *, forks: str | None = None) -> list[int]:
    """Ten dormant customers through the reference flow (and ``forks``, a flow file enabled as ``forks``): the first
    email at T0, three of them buy on day 3, the second email to the other seven on day 4;
    the pages are then read on day 5."""
    people = make_contacts(ws, 10, at=T0 - 400 * DAY, first_name="Ada")
    for cid in people:
        add_order(ws, cid, at=T0 - 200 * DAY)
    ws.flows.add("reactivation", now=T0 - DAY)
    if forks is not None:
        (ws.path / "flows" / "forks.yaml").write_text(forks, encoding="utf-8")
        ws.flows.enable("forks", now=T0 - DAY)
    for day in (0, 4):
        if day == 4:
            for cid in people[:3]:
                add_order(ws, cid, at=T0 + 3 * DAY, amount=80.0)
        clock.set(T0 + day * DAY)
        run_once(ws, T0 + day * DAY, sink="file")
    clock.set(T0 + 5 * DAY)
    return people


def small_shop(ws: Workspace, tmp_path: Path, *, customers: int = 200) -> None:
    """Import a generated shop ending at the workspace clock's day, refresh the segments
    (which takes the day's snapshots) and analyse it."""
    shop = generate_shop(
        tmp_path / "shop",
        customers=customers,
        months=8,
        seed=7,
        end=ws.clock.now().date(),
        dirty_share=0.0,
    )
    for kind in ("contacts", "orders", "events"):
        getattr(ws.imports, kind)(shop.out_dir / f"{kind}.csv")
    ws.segments.refresh()
    ws.analytics.analyze(holdout=False)


def figure(html: str, element_id: str) -> str:
    """The text of the element with ``id`` (its first text node, stripped)."""
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>([^<]*)<', html)
    assert found is not None, f"no element #{element_id} in the page"
    return found.group(1).strip()
