"""The marketer's dashboard in real headless Chromium, against the real service on a small
generated shop whose contacts went through the reference flow and whose analysis is stored.

One browser and one service for the module; the visit is made at a desktop and at a phone
width. Every page visited is checked four ways: the figures it shows equal the CLI's
``--json`` for the same workspace, it loads nothing from outside the server, it logs no
console error, and it is no wider than the window. A screenshot of each page is kept in
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
from sqlalchemy import select

import winback
from tests.web_support import running_service
from winback.clock import FixedClock
from winback.store.schema import contacts, flow_entries, flows, orders
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
#: Set (``make docs-screenshots``), the desktop pass also writes the first screen of each page
#: here, for docs/dashboard.md.
DOCS_IMG = os.environ.get("WINBACK_DOCS_IMG")
#: The two widths every page must work at: a laptop and a phone.
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
SHOP_END = date(2026, 3, 1)
ANALYSED = SHOP_END + timedelta(days=7)
USER, PASSWORD = "mara", "a long pass phrase for the test"
DAY = timedelta(days=1)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]


# -- the workspace, the service and the browser, once per module ---------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A generated 300-customer shop whose history ends on ``SHOP_END``; its reactivation
    flow ran on days 0, 4 and 7 after that (emails to the dry-run channel), five of its
    contacts bought again on day 2, and the analysis was made on day 7. A dashboard user can
    sign in."""
    from winback import accounts
    from winback.flows.runner import run_once
    from winback.generator import generate_shop

    folder = tmp_path_factory.mktemp("dashboard")
    created = winback.init(folder / "ws", environ={})
    generated = generate_shop(folder / "shop", customers=300, months=12, seed=7, end=SHOP_END)
    start = datetime.combine(SHOP_END, datetime.min.time(), tzinfo=UTC)
    clock = FixedClock(start)
    # The clock sits at midnight UTC: no quiet hours, so that nobody is deferred.
    settings = created.settings.model_copy(update={"quiet_hours": ""})
    with created, created.replace(settings=settings, clock=clock) as ws:
        for kind in ("contacts", "orders", "events"):
            getattr(ws.imports, kind)(generated.out_dir / f"{kind}.csv")
        ws.flows.add("reactivation", now=start - DAY)
        for day in (0, 4, 7):
            clock.set(start + day * DAY)
            if day == 4:
                _buy_again(ws, folder / "comeback.csv", at=start + 2 * DAY, buyers=5)
            run_once(ws, clock.now())
        ws.analytics.analyze()
        accounts.add_user(ws.engine, USER, PASSWORD, at=clock.now())
        yield ws


def _buy_again(ws: Workspace, path: Path, *, at: datetime, buyers: int) -> None:
    """Orders at ``at`` from the first ``buyers`` contacts of the reactivation flow."""
    with ws.engine.connect() as conn:
        ids = conn.execute(
            select(contacts.c.customer_id)
            .join(flow_entries, flow_entries.c.contact_id == contacts.c.id)
            .join(flows, flows.c.id == flow_entries.c.flow_id)
            .where(flows.c.key == "reactivation")
            .order_by(contacts.c.id)
            .limit(buyers)
        ).scalars()
        rows = [f"R{i},{cid},{at.isoformat()},42.50,USD" for i, cid in enumerate(ids)]
    path.write_text("order_id,customer_id,ordered_at,amount,currency\n" + "\n".join(rows) + "\n")
    report = ws.imports.orders(path)
    assert report.imported == buyers


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
    shop: Workspace
    width: str
    context: BrowserContext
    page: Page
    recorder: Recorder

    def goto(self, path: str) -> None:
        answer = self.page.goto(self.base + path)
        assert answer is not None and answer.ok, f"{path}: {answer and answer.status}"

    def shoot(self, name: str, *, docs: bool = False) -> Path:
        """A full-page screenshot, kept as a test artifact; the page must fit the width.
        ``docs``: also the first screen at desktop width for docs/dashboard.md."""
        path = SCREENSHOTS / self.width / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow} px wider than the {self.width} window"
        if docs and DOCS_IMG and self.width == "desktop":
            self.page.screenshot(path=str(Path(DOCS_IMG) / f"dashboard-{name}.png"))
        return path


@pytest.fixture(params=list(WIDTHS))
def visit(
    request: pytest.FixtureRequest, browser: Browser, base: str, shop: Workspace
) -> Iterator[Visit]:
    """A fresh browser context (no cookies) at a desktop or a phone width."""
    width, height = WIDTHS[request.param]
    context = browser.new_context(viewport={"width": width, "height": height})
    recorder = Recorder(base)
    recorder.attach(context)
    try:
        yield Visit(base, shop, request.param, context, context.new_page(), recorder)
    finally:
        context.close()


# -- the CLI, for the figures ---------------------------------------------------------------


#: Runs the CLI once per command in one interpreter (its imports take seconds) and writes
#: what each command printed, as a JSON list.
CLI_DRIVER = """
import contextlib, io, json, sys
from winback.cli import app
printed = []
for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        app(args, standalone_mode=False, prog_name="winback")
    printed.append(out.getvalue())
sys.stdout.write(json.dumps(printed))
"""


def cli_json(ws: Workspace, *commands: tuple[str, ...]) -> list[Any]:
    """The real CLI's ``--json`` answers for ``ws``, from a subprocess running this
    checkout's ``winback`` (settings from the workspace's file only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINBACK_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    argv = [[*args, "--workspace", str(ws.path), "--json"] for args in commands]
    done = subprocess.run(
        [sys.executable, "-c", CLI_DRIVER, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(printed) for printed in json.loads(done.stdout)]


@dataclass(frozen=True)
class Figures:
    """What the CLI says about the shop, asked once."""

    summary: dict[str, Any]
    analysis: dict[str, Any]
    segments: list[dict[str, Any]]
    flows: list[dict[str, Any]]
    stats: dict[str, Any]
    results: dict[str, Any]
    contact: dict[str, Any]
    preview: dict[str, Any]
    templates: list[dict[str, Any]]
    doctor: dict[str, Any]


#: The template previewed, and the contact it is rendered for (one who bought again).
TEMPLATE = "reactivation-1"


@pytest.fixture(scope="module")
def comeback(shop: Workspace) -> str:
    """The customer id of the first contact who bought again after the flow's first email."""
    with shop.engine.connect() as conn:
        found = conn.execute(
            select(contacts.c.customer_id)
            .join(orders, orders.c.contact_id == contacts.c.id)
            .where(orders.c.order_id == "R0")
        ).scalar_one()
    return str(found)


@pytest.fixture(scope="module")
def figures(shop: Workspace, comeback: str) -> Figures:
    """The CLI's ``--json`` for every page of the visit. The CLI's clock is the wall clock:
    the shares of the dormant window, which depend on the instant, are taken from
    :func:`winback.summary.base_summary` (what ``summary`` calls) at the workspace's clock;
    ``analyze`` runs as of the day of the stored analysis without writing."""
    from winback.summary import base_summary

    answers = cli_json(
        shop,
        ("summary",),
        ("analyze", "--as-of", f"{ANALYSED:%Y-%m-%d}", "--no-write"),
        ("segments", "list"),
        ("flows", "list"),
        ("flows", "stats", "reactivation"),
        ("flows", "results", "reactivation"),
        ("contacts", "show", comeback),
        ("templates", "render", TEMPLATE, "--contact", comeback),
        ("templates", "list"),
        ("doctor",),
    )
    at_clock = base_summary(shop.engine, now=shop.clock.now(), days=shop.settings.dormant_days)
    answers[0].update({k: v for k, v in at_clock.items() if k.startswith("share_")})
    return Figures(*answers)


def at_path(data: Any, path: str) -> Any:
    """The value at a dotted ``data-figure`` path: a number indexes a list, a name picks the
    list item that has it as a value (``groups.treatment``) or the key of a mapping."""
    for part in path.split("."):
        if isinstance(data, list):
            data = (
                data[int(part)] if part.isdigit() else next(x for x in data if part in x.values())
            )
        else:
            data = data[part]
    return data


def data_figures(page: Page, scope: str = "body") -> dict[str, str]:
    """Every ``data-figure`` with a ``data-value`` under ``scope``: path -> raw value."""
    found: dict[str, str] = page.eval_on_selector_all(
        f"{scope} [data-figure][data-value]",
        "els => Object.fromEntries(els.map(e => [e.dataset.figure, e.dataset.value]))",
    )
    return found


def check_figures(page: Page, cli: dict[str, Any], scope: str = "body") -> dict[str, str]:
    """Every figure under ``scope`` equals the value at its ``data-figure`` path in ``cli``
    (the CLI's answers under the path's first name). Returns the figures compared."""
    shown = data_figures(page, scope)
    assert shown, f"no figure under {scope}"
    for path, value in shown.items():
        assert same_value(value, at_path(cli, path)), (path, value)
    return shown


def same_value(shown: str, expected: Any) -> bool:
    if isinstance(expected, dict) and "rate" in expected:  # a rate with its count
        expected = expected["rate"]
    if expected is None:
        return shown in ("", "None")
    if isinstance(expected, bool):
        return shown == str(expected).lower()
    if isinstance(expected, str):
        return shown == expected
    return float(shown) == pytest.approx(float(expected), abs=1e-9)


def text(page: Page, selector: str) -> str:
    return page.inner_text(selector).strip()


# -- the steps of a marketer's visit ---------------------------------------------------------


def sign_in(visit: Visit) -> None:
    """Open a page, land on the login form, sign in, arrive on the page asked for."""
    visit.page.goto(visit.base + "/overview")
    assert urlsplit(visit.page.url).path == "/login"
    visit.shoot("login")
    visit.page.fill("#username", USER)
    visit.page.fill("#password", PASSWORD)
    with visit.page.expect_navigation():
        visit.page.click("button[type=submit]")
    assert urlsplit(visit.page.url).path == "/overview"
    assert USER in text(visit.page, "header.top")


def overview(visit: Visit, figures: Figures) -> None:
    page, base, dormant = visit.page, figures.summary, figures.analysis["health"]["dormant"]
    assert text(page, "h1") == "Overview"
    assert text(page, "#customers") == f"{base['customers']:,}"
    assert text(page, "#buyers") == f"{base['customers_with_orders']:,}"
    assert text(page, "#revenue") == f"{base['revenue']:,.2f}"
    assert text(page, "#share-no-purchase") == f"{100 * base['share_no_purchase']:.1f}%"
    assert text(page, "#dormant-fixed") == f"{100 * dormant['fixed_rule']['share']:.1f}%"
    assert text(page, "#dormant-alive") == f"{100 * dormant['alive_rule']['share']:.1f}%"
    consent = dict(
        (row[0], row[1])
        for row in page.eval_on_selector_all(
            "#consent tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
        )
    )
    assert consent == {k: f"{100 * v:.1f}%" for k, v in base["consent_rate"].items()}
    cli = {"summary": base, "analyze": figures.analysis, "flows": figures.flows}
    shown = check_figures(page, cli)
    assert {p.split(".")[0] for p in shown} == set(cli)
    visit.shoot("overview", docs=True)


def rfm_cell_members(visit: Visit, figures: Figures) -> None:
    page, rfm = visit.page, figures.analysis["rfm"]
    page.click("nav >> text=RFM")
    page.wait_for_url("**/rfm")
    counts = rfm["grid"]["counts"]
    for r in range(1, 6):
        for f in range(1, 6):
            assert text(page, f"#cell-{r}-{f}") == f"{counts[r - 1][f - 1]:,}", (r, f)
    for segment in rfm["segments"]:
        shown = text(page, f'td[data-segment="{segment["segment"]}"]')
        assert shown == f"{segment['customers']:,}", segment["segment"]
    assert len(check_figures(page, {"rfm": rfm})) == 2 * 25 + 2 * len(rfm["segments"])
    visit.shoot("rfm", docs=True)
    # The fullest cell that fits on one page of members.
    n, r, f = max(
        (c, r, f) for r, row in enumerate(counts, 1) for f, c in enumerate(row, 1) if c <= 50
    )
    assert n > 0
    page.click(f"#cell-{r}-{f}")
    page.wait_for_url(f"**/rfm/members?r={r}&f={f}")
    assert text(page, "#members-count") == f"{n:,} members"
    assert page.locator("tr[data-contact]").count() == n
    visit.shoot("rfm-members")


def reactivation_flow(visit: Visit, figures: Figures) -> None:
    page = visit.page
    page.click("nav >> text=Flows")
    page.wait_for_url("**/flows")
    page.wait_for_selector("#flows-table [data-figure=delivered]")  # counted after the page
    for flow in figures.flows:
        row = f'tr[data-flow="{flow["key"]}"]'
        shown = data_figures(page, row)
        assert shown["entered"] == str(flow["entered"]) and shown["active"] == str(flow["active"])
        assert text(page, f"{row} [data-figure=status]") == flow["status"]
    glance = data_figures(page, 'tr[data-flow="reactivation"]')
    results = figures.results
    assert glance["delivered"] == str(sum(step["delivered"] for step in results["steps"]))
    assert glance["reactivated"] == str(at_path(results, "groups.treatment.reactivated")) != "0"
    visit.shoot("flows")
    page.click('tr[data-flow="reactivation"] a')
    page.wait_for_url("**/flows/reactivation")
    # The statistics and the results come in a second request each (htmx).
    page.wait_for_selector("#stats [data-figure]")
    page.wait_for_selector("#results [data-figure]")
    shown = check_figures(page, {"stats": figures.stats, "results": figures.results})
    assert {path.split(".")[0] for path in shown} == {"stats", "results"}
    diagram = page.locator(".diagram svg")
    assert diagram.count() == 1
    drawn = diagram.text_content() or ""
    assert f"{figures.stats['entered']} entered" in drawn
    for name in figures.stats["step_names"].values():
        assert name in drawn
    visit.shoot("flow", docs=True)
    # Pause, then enable again: the page and the CLI agree on the status each time.
    for button, status in (("Pause", "paused"), ("Enable", "enabled")):
        page.click(f"#flow-status >> text={button}")
        page.wait_for_selector(f"#flow-status [data-figure=status]:text-is('{status}')")
        with visit.shop.engine.connect() as conn:
            stored = conn.execute(select(flows.c.status).where(flows.c.key == "reactivation"))
            assert stored.scalar_one() == status
        if status == "paused":
            visit.shoot("flow-paused")


def segments(visit: Visit, figures: Figures) -> None:
    page = visit.page
    page.click("nav >> text=Segments")
    page.wait_for_url("**/segments")
    shown = data_figures(page, "#segments")
    assert len(shown) == len(figures.segments)
    for path, value in shown.items():
        assert same_value(value, at_path(figures.segments, path)), path
    visit.shoot("segments", docs=True)
    # The flow's entry segment: its count, and its members on one page.
    [entry] = [s for s in figures.segments if s["name"] == "Customers Not Active"]
    page.click('#segments a:text-is("Customers Not Active")')
    page.wait_for_url("**/segments/Customers%20Not%20Active")
    assert data_figures(page, "main") == {"members": str(entry["members"])}
    assert page.locator("tr[data-contact]").count() == min(entry["members"], 50) > 0
    visit.shoot("segment")


def contact(visit: Visit, figures: Figures, comeback: str) -> None:
    """Find the contact by email, open it: profile, consent, timeline."""
    page, profile = visit.page, figures.contact
    page.click("nav >> text=Contacts")
    page.wait_for_url("**/contacts")
    page.fill("#q", profile["attributes"]["email"])
    with page.expect_navigation():
        page.press("#q", "Enter")
    page.click(f'tr[data-contact="{profile["contact_id"]}"] a')
    page.wait_for_url(f"**/contacts/{profile['contact_id']}")
    assert comeback in text(page, "h1")
    shown = check_figures(page, profile)
    assert "attributes.email" in shown and "consent.email" in shown
    # The order of day 2 and the flow's first email are on the timeline.
    assert page.locator("#timeline li[data-kind=order]").count() >= 1
    messages = page.locator("#timeline li[data-kind=message]")
    assert messages.count() == len(profile["messages"]) > 0
    visit.shoot("contact", docs=True)


def template_preview(visit: Visit, figures: Figures, comeback: str) -> None:
    """From the contact's page, the flow's first email rendered for them, at desktop and
    phone width; then the list of templates."""
    page, rendered = visit.page, figures.preview
    page.select_option("#template", TEMPLATE)
    with page.expect_navigation():
        page.click("form:has(#template) button[type=submit]")
    assert urlsplit(page.url).path == f"/templates/{TEMPLATE}"
    who = figures.contact["attributes"]
    rendered_for = f"#{figures.contact['contact_id']} {who['first_name']} {who['last_name']}"
    assert text(page, "form.search").endswith(f"{rendered_for} {who['email']}")
    assert text(page, "[data-figure=subject]") == rendered["subject"]
    assert text(page, "[data-figure=preheader]") == rendered["preheader"]
    assert text(page, "[data-figure=text]") == rendered["text"].strip()
    frames = page.locator("iframe.message")
    assert frames.count() == 2  # desktop and phone
    first_name = figures.contact["attributes"]["first_name"]
    assert first_name and first_name in rendered["subject"]
    visit.shoot("template", docs=True)
    page.click("nav >> text=Templates")
    page.wait_for_url("**/templates")
    listed = page.eval_on_selector_all(
        "tr[data-template]", "rows => rows.map(r => r.dataset.template)"
    )
    assert listed == [t["name"] for t in figures.templates]
    visit.shoot("templates")


def setup(visit: Visit, figures: Figures) -> None:
    page = visit.page
    page.click("nav >> text=Setup")
    page.wait_for_url("**/setup")
    page.wait_for_selector("#smtp-check:not([hx-get])")  # the relay is checked after the page
    for check in figures.doctor["checks"]:
        name = check["check"]
        row = "#smtp-check" if name == "smtp" else f'tr[data-check="{name}"]'
        assert text(page, f"{row} .status") == ("ok" if check["ok"] else "missing"), name
    visit.shoot("setup", docs=True)


def report(visit: Visit, figures: Figures) -> None:
    page = visit.page
    page.click("nav >> text=Report")
    page.wait_for_url("**/report")
    assert f"Analysis of {figures.analysis['reference_date']}" in text(page, "#report-date")
    frame = page.frame_locator("iframe.report")
    frame.locator("svg").first.wait_for()
    visit.shoot("report", docs=True)


# -- the tests ------------------------------------------------------------------------------


def test_a_marketer_walks_through_the_dashboard(
    visit: Visit, figures: Figures, comeback: str
) -> None:
    sign_in(visit)
    overview(visit, figures)
    rfm_cell_members(visit, figures)
    segments(visit, figures)
    reactivation_flow(visit, figures)
    contact(visit, figures, comeback)
    template_preview(visit, figures, comeback)
    setup(visit, figures)
    report(visit, figures)
    visit.recorder.check()


def test_an_anonymous_browser_lands_on_the_login_form(visit: Visit) -> None:
    visit.page.goto(visit.base + "/?from=mail")
    assert urlsplit(visit.page.url).path == "/login"
    assert urlsplit(visit.page.url).query == "next=/%3Ffrom%3Dmail"
    assert visit.page.locator("form[action='/login'] #password").is_visible()
    assert visit.page.locator("input[name=next]").input_value() == "/?from=mail"
    stylesheet = visit.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert stylesheet != "rgba(0, 0, 0, 0)", "the stylesheet from /static did not apply"
    visit.recorder.check()
