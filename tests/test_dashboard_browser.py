"""The marketer's dashboard in real headless Chromium, against the real service on a small
generated shop whose contacts went through the reference flow and whose analysis is stored.

One browser and one service for the module. Every page visited is checked three ways: the
figures it shows equal the CLI's ``--json`` for the same workspace, it loads nothing from
outside the server, and it logs no console error. A screenshot of each page is kept in
``$WINBACK_TEST_SCREENSHOTS`` (default ``test-artifacts/dashboard/``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

import winback
from tests.web_support import running_service
from winback.clock import FixedClock
from winback.workspace import Workspace

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(
    os.environ.get("WINBACK_TEST_SCREENSHOTS", str(ROOT / "test-artifacts" / "dashboard"))
)
#: The two widths every page must work at: a laptop and a phone.
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
SHOP_END = date(2026, 3, 1)
DAY = timedelta(days=1)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]


# -- the workspace, the service and the browser, once per module ---------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A generated 300-customer shop, imported and analysed as of the end of its history,
    whose reactivation flow ran on days 0, 4 and 7 (emails to the dry-run channel)."""
    from winback.flows.runner import run_once
    from winback.generator import generate_shop

    folder = tmp_path_factory.mktemp("dashboard")
    created = winback.init(folder / "ws", environ={})
    generated = generate_shop(folder / "shop", customers=300, months=12, seed=7, end=SHOP_END)
    clock = FixedClock(datetime.combine(SHOP_END, datetime.min.time(), tzinfo=UTC))
    # The clock sits at midnight UTC: no quiet hours, so that nobody is deferred.
    settings = created.settings.model_copy(update={"quiet_hours": ""})
    with created, created.replace(settings=settings, clock=clock) as ws:
        for kind in ("contacts", "orders", "events"):
            getattr(ws.imports, kind)(generated.out_dir / f"{kind}.csv")
        ws.analytics.analyze()
        ws.flows.add("reactivation", now=clock.now() - DAY)
        for day in (0, 4, 7):
            clock.set(datetime.combine(SHOP_END, datetime.min.time(), tzinfo=UTC) + day * DAY)
            run_once(ws, clock.now())
        yield ws


@pytest.fixture(scope="module")
def base(shop: Workspace) -> Iterator[str]:
    """The real service (uvicorn on 127.0.0.1) over the shop."""
    with running_service(shop) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# -- what every page is checked for ---------------------------------------------------------


@dataclass
class Recorder:
    """Every request a browser context makes and every console error or page error."""

    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._request)
        context.on("console", self._console)
        context.on("weberror", lambda error: self.errors.append(f"page error: {error.error}"))

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")

    def outside(self) -> list[str]:
        """The requests that went anywhere but the server."""
        return [
            url
            for url in self.requests
            if f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" != self.origin
        ]

    def check(self) -> None:
        assert self.requests, "the recorder saw no request at all"
        assert self.outside() == [], "requests outside the server"
        assert self.errors == [], "console errors"


@dataclass
class Visit:
    """A browser context at one width, its recorder and its screenshot folder."""

    base: str
    width: str
    context: BrowserContext
    page: Page
    recorder: Recorder

    def goto(self, path: str) -> None:
        answer = self.page.goto(self.base + path)
        assert answer is not None and answer.ok, f"{path}: {answer and answer.status}"

    def shoot(self, name: str) -> Path:
        """A full-page screenshot, kept as a test artifact; the page must fit the width."""
        path = SCREENSHOTS / self.width / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow} px wider than the {self.width} window"
        return path


@pytest.fixture(params=list(WIDTHS))
def visit(request: pytest.FixtureRequest, browser: Browser, base: str) -> Iterator[Visit]:
    """A fresh browser context (no cookies) at a desktop or a phone width."""
    width, height = WIDTHS[request.param]
    context = browser.new_context(viewport={"width": width, "height": height})
    recorder = Recorder(base)
    recorder.attach(context)
    try:
        yield Visit(base, request.param, context, context.new_page(), recorder)
    finally:
        context.close()


# -- the CLI, for the figures ---------------------------------------------------------------


def cli_json(ws: Workspace, *args: str) -> Any:
    """The real CLI's ``--json`` answer for ``ws`` (a subprocess running this checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-m", "winback.cli", *args, "--workspace", str(ws.path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- the tests ------------------------------------------------------------------------------


def test_an_anonymous_browser_lands_on_the_login_form(visit: Visit) -> None:
    visit.page.goto(visit.base + "/?from=mail")
    assert urlsplit(visit.page.url).path == "/login"
    assert urlsplit(visit.page.url).query == "next=/%3Ffrom%3Dmail"
