"""The management API (``/api/v1/`` segments, flows, contacts, tags) through the real service:
its figures equal the CLI's ``--json`` for the same workspace, paging is stable, writes go
through the core (consent logged, erasure erases, enable / pause seen by the CLI), and every
documented error is answered."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from tests.conftest import T0
from tests.delivery_support import configure
from tests.test_segments import crafted_shop
from tests.test_store_concurrency import _store_locked
from tests.web_support import new_api_key, running_service
from winback.cli import app as cli
from winback.store.apikeys import Scope
from winback.store.schema import consent_log, contacts, erasures, tag_history
from winback.workspace import Workspace

D = timedelta(days=1)
runner = CliRunner()
_INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def cli_json(ws: Workspace, *args: str) -> Any:
    result = runner.invoke(
        cli,
        [*args, "-w", str(ws.path), "--json"],
        env={"WINBACK_DATABASE_URL": ws.database_url},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def same(value: Any) -> Any:
    """``value`` with ISO 8601 instants as datetimes (``Z`` and ``+00:00`` are one)."""
    if isinstance(value, dict):
        return {k: same(v) for k, v in value.items()}
    if isinstance(value, list):
        return [same(v) for v in value]
    if isinstance(value, str) and _INSTANT.match(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


class Api:
    """The service at ``base`` with one API key."""

    def __init__(self, base: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def __call__(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = self.client.request(method, path, **kwargs)
        assert answer.status_code == expect, (method, path, answer.status_code, answer.text)
        return answer.json()


@pytest.fixture
def shop(workspace: Workspace) -> Iterator[tuple[Workspace, Api]]:
    """The crafted shop with its segments refreshed, the reactivation flow run once, a tag,
    and the service over it."""
    ws = workspace
    crafted_shop(ws)
    ws.segments.refresh(T0)
    ws.flows.add("reactivation", enable=True, now=T0)
    ws.flows.tick(T0)
    with running_service(ws) as base:
        api = Api(base, new_api_key(ws, "crm", Scope.MANAGE))
        yield ws, api
        api.client.close()


def test_reads_equal_the_cli_json(shop: tuple[Workspace, Api]) -> None:
    ws, api = shop
    segments = api("GET", "/api/v1/segments")
    assert same(segments) == same(cli_json(ws, "segments", "list"))
    assert {s["name"]: s["members"] for s in segments}["Customers Not Active"] == 3
    name = quote("Customers Not Active")
    assert same(api("GET", f"/api/v1/segments/{name}")) == same(
        cli_json(ws, "segments", "show", "Customers Not Active")
    )
    page = api("GET", f"/api/v1/segments/{name}/members", params={"limit": 2})
    assert page["members"] == 3 and len(page["items"]) == 2 and page["next_cursor"]
    rest = api("GET", f"/api/v1/segments/{name}/members", params={"cursor": page["next_cursor"]})
    assert rest["next_cursor"] is None
    listed = cli_json(ws, "segments", "members", "Customers Not Active")
    assert same(page["items"] + rest["items"]) == same(
        sorted(listed, key=lambda m: m["contact_id"])
    )

    flows = api("GET", "/api/v1/flows")
    assert flows == cli_json(ws, "flows", "list")
    assert flows[0]["key"] == "reactivation" and flows[0]["entered"] > 0
    assert api("GET", "/api/v1/flows/reactivation") == cli_json(
        ws, "flows", "stats", "reactivation"
    )
    results = api("GET", "/api/v1/flows/reactivation/results", params={"since": "2026-02-01"})
    expected = cli_json(ws, "flows", "results", "reactivation", "--since", "2026-02-01")
    # as_of is each one's clock: the test's fixed one, the CLI's wall clock.
    del results["as_of"], expected["as_of"]
    assert same(results) == same(expected)
    assert results["groups"] and results["since"].startswith("2026-02-01")

    tags = api("GET", "/api/v1/tags")
    assert same(tags) == same(cli_json(ws, "tags", "list"))
    assert tags and tags[0]["contacts"] == 1
    tagged = api("GET", "/api/v1/contacts/tagged/tags")
    assert same(tagged) == same(cli_json(ws, "tags", "list", "--contact", "tagged"))
    for ref in ("dormant", "%23" + str(api("GET", "/api/v1/contacts/dormant")["contact_id"])):
        profile = api("GET", f"/api/v1/contacts/{ref}")
        assert same(profile) == same(cli_json(ws, "contacts", "show", "dormant"))
        assert profile["flows"] and profile["flows"][0]["flow"] == "reactivation"


def test_read_errors(shop: tuple[Workspace, Api]) -> None:
    ws, api = shop
    assert "no flow" in api("GET", "/api/v1/flows/nope", 404)["detail"]
    assert api("GET", "/api/v1/flows/nope/results", 404)
    assert api("GET", "/api/v1/segments/nope", 404)
    assert api("GET", "/api/v1/segments/nope/members", 404)
    assert api("GET", "/api/v1/contacts/nobody", 404)
    bad = api("GET", "/api/v1/flows/reactivation/results", 422, params={"until": "March"})
    assert bad["detail"][0]["loc"] == ["query", "until"]
    members = "/api/v1/segments/Customers/members"
    assert api("GET", members, 422, params={"limit": 1001})["detail"][0]["loc"] == [
        "query",
        "limit",
    ]
    assert api("GET", members, 422, params={"cursor": "garbage"})["detail"][0]["loc"] == [
        "query",
        "cursor",
    ]
    base = str(api.client.base_url)
    for path in ("/api/v1/segments", "/api/v1/flows", "/api/v1/tags", "/api/v1/contacts/x"):
        anonymous = httpx.get(base + path)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"
        wrong = httpx.get(base + path, headers={"Authorization": "Bearer wbk_wrong"})
        assert wrong.status_code == 401, path
    for method, path in (
        ("POST", "/api/v1/flows/reactivation/pause"),
        ("PUT", "/api/v1/contacts/x"),
        ("DELETE", "/api/v1/contacts/dormant"),
        ("POST", "/api/v1/contacts/dormant/consent"),
        ("PUT", "/api/v1/contacts/dormant/tags/vip"),
    ):
        assert httpx.request(method, base + path, json={}).status_code == 401, path
    reader = Api(base, new_api_key(ws, "reader", Scope.READ))
    assert reader("GET", "/api/v1/flows")[0]["status"] == "enabled"
    assert "manage" in reader("POST", "/api/v1/flows/reactivation/pause", 403)["detail"]
    assert reader("DELETE", "/api/v1/contacts/dormant", 403)
    shop_key = Api(base, new_api_key(ws, "shop", Scope.EVENTS))
    assert shop_key("GET", "/api/v1/segments", 403)
    assert cli_json(ws, "flows", "list")[0]["status"] == "enabled"
    assert ws.contacts.profile("dormant")["attributes"]["erased_at"] is None


def test_member_pages_are_stable(workspace: Workspace) -> None:
    ws = workspace
    folder = ws.path / "segments"
    folder.mkdir(exist_ok=True)
    (folder / "all.yaml").write_text("name: Everyone\nattribute: email\nhas_any_value: true\n")
    people = [f"c{i:02}" for i in range(23)]
    with ws.engine.begin() as conn:
        ws.store.ensure_contacts(people, at=T0 - D, conn=conn)
        conn.execute(update(contacts).values(email=contacts.c.customer_id + "@example.com"))
    ws.segments.refresh(T0)
    with running_service(ws) as base:
        api = Api(base, new_api_key(ws, "crm", Scope.MANAGE))
        first = api("GET", "/api/v1/segments/Everyone/members", params={"limit": 5})
        # Members entering (a refresh later) and leaving between two pages.
        api("PUT", "/api/v1/contacts/late", 201, json={"email": "late@example.com"})
        api("DELETE", "/api/v1/contacts/c12")
        ws.segments.refresh(T0 + D, full=True)
        seen = [m["customer_id"] for m in first["items"]]
        cursor = first["next_cursor"]
        while cursor:
            page = api(
                "GET",
                "/api/v1/segments/Everyone/members",
                params={"limit": 5, "cursor": cursor, "detail": "true"},
            )
            assert len(page["items"]) <= 5
            assert {"email_consent", "rfm_segment", "p_alive", "clv"} <= set(page["items"][0])
            seen += [m["customer_id"] for m in page["items"]]
            cursor = page["next_cursor"]
        again = api("GET", "/api/v1/segments/Everyone/members", params={"limit": 1000})
    # No one skipped or shown twice; the one who left is gone, the newcomer comes last.
    assert seen == [p for p in people if p != "c12"] + ["late"]
    listed = [m["customer_id"] for m in again["items"]]
    assert listed == seen and again["next_cursor"] is None
    assert "email_consent" not in again["items"][0]


def test_enable_and_pause_are_seen_by_the_cli(shop: tuple[Workspace, Api]) -> None:
    ws, api = shop
    paused = api("POST", "/api/v1/flows/reactivation/pause")
    assert paused["changed"] is True and paused["flow"]["status"] == "paused"
    assert cli_json(ws, "flows", "list")[0]["status"] == "paused"
    assert api("POST", "/api/v1/flows/reactivation/pause")["changed"] is False
    enabled = api("POST", "/api/v1/flows/reactivation/enable")
    assert enabled["changed"] is True and enabled["flow"] == cli_json(ws, "flows", "list")[0]
    assert enabled["flow"]["status"] == "enabled"
    assert api("POST", "/api/v1/flows/reactivation/enable")["changed"] is False
    assert api("POST", "/api/v1/flows/nope/enable", 404)


def test_contact_create_update_consent_erase(shop: tuple[Workspace, Api]) -> None:
    ws, api = shop
    body = {
        "email": " Ada@Example.com ",
        "first_name": "Ada",
        "birthday": "1990-04-01",
        "email_consent": True,
        "attributes": {"plan": "gold", "visits": 3},
        "tags": ["vip"],
    }
    made = api("PUT", "/api/v1/contacts/ada-1", 201, json=body)
    assert made["outcome"] == "created" and made["tags_added"] == 1
    contact = made["contact"]
    assert contact["attributes"]["email"] == "ada@example.com"  # as an import writes it
    assert contact["custom_attributes"] == {"plan": "gold", "visits": 3}
    assert contact["consent"]["email"] is True
    assert [t["tag"] for t in contact["tags"]] == ["vip"]
    assert same(contact) == same(cli_json(ws, "contacts", "show", "ada-1"))
    again = api("PUT", "/api/v1/contacts/ada-1", json=body)
    assert again["outcome"] == "unchanged"
    changed = api("PUT", "/api/v1/contacts/ada-1", json={"attributes": {"visits": 4}})
    assert changed["outcome"] == "updated"
    assert changed["contact"]["custom_attributes"] == {"plan": "gold", "visits": 4}
    assert api("GET", "/api/v1/contacts/ADA@example.com")["customer_id"] == "ada-1"

    refused = api("PUT", "/api/v1/contacts/ada-1", 422, json={"email": "not-an-address"})
    assert refused["detail"][0]["loc"] == ["body", "email"]
    assert "not an email address" in refused["detail"][0]["msg"]
    assert api("PUT", "/api/v1/contacts/ada-1", 422, json={"timezone": "Mars/Base"})
    assert api("PUT", "/api/v1/contacts/ada-1", 422, json={"tags": ["a,b"]})
    tagged = api("PUT", "/api/v1/contacts/ada-1", json={"tags": ["vip", "newsletter"]})
    assert (tagged["outcome"], tagged["tags_added"]) == ("updated", 1)
    phone = api("PUT", "/api/v1/contacts/ada-1", 422, json={"phone": "12"})
    assert phone["detail"][0]["loc"] == ["body", "phone"]
    assert api("PUT", "/api/v1/contacts/ada-1", 422, json={"colour": "red"})
    assert api("PUT", "/api/v1/contacts/%2312", 422, json={})["detail"][0]["loc"] == [
        "path",
        "contact",
    ]
    assert api("PUT", "/api/v1/contacts/ada-1", 422, json={"attributes": {"email": "x@y.z"}})

    consent = {"channel": "email", "status": "revoked", "source": "crm form 7"}
    out = api("POST", "/api/v1/contacts/ada-1/consent", json=consent)
    assert out["changed"] is True and out["consent"]["email"] is False
    assert api("POST", "/api/v1/contacts/ada-1/consent", json=consent)["changed"] is False
    granted = api(
        "POST", "/api/v1/contacts/ada-1/consent", json={"channel": "sms", "status": "granted"}
    )
    assert granted["source"] == "api:crm"
    cid = out["contact_id"]
    with ws.engine.connect() as conn:
        log = conn.execute(
            select(consent_log.c.channel, consent_log.c.granted, consent_log.c.source)
            .where(consent_log.c.contact_id == cid)
            .order_by(consent_log.c.id)
        ).all()
    assert [tuple(r) for r in log] == [
        ("email", True, "api:crm"),
        ("email", False, "crm form 7"),
        ("sms", True, "api:crm"),
    ]
    assert api(
        "POST", "/api/v1/contacts/ada-1/consent", 422, json={"channel": "fax", "status": "granted"}
    )

    erased = api("DELETE", "/api/v1/contacts/ada-1", params={"reason": "asked by mail"})
    assert erased["erased"] is True and erased["contact_id"] == cid
    with ws.engine.connect() as conn:
        row = conn.execute(select(contacts).where(contacts.c.id == cid)).mappings().one()
        audit = conn.execute(select(erasures).where(erasures.c.contact_id == cid)).mappings().one()
    assert row["email"] is None and row["first_name"] is None and row["birthday"] is None
    assert row["email_consent"] is False and row["sms_consent"] is False
    assert row["attributes"] in ({}, None) and row["erased_at"] is not None
    assert (audit["source"], audit["reason"]) == ("api:crm", "asked by mail")
    assert api("GET", "/api/v1/contacts/ada-1/tags")["tags"] == []
    assert api("DELETE", "/api/v1/contacts/ada-1")["erased"] is False
    assert "erased" in api("PUT", "/api/v1/contacts/ada-1", 409, json=body)["detail"]
    assert api("POST", "/api/v1/contacts/ada-1/consent", 409, json=consent)
    assert api("DELETE", "/api/v1/contacts/nobody", 404)
    assert api("POST", "/api/v1/contacts/nobody/consent", 404, json=consent)


def test_tags_of_a_contact_with_history(shop: tuple[Workspace, Api]) -> None:
    ws, api = shop
    added = api("PUT", "/api/v1/contacts/dormant/tags/vip")
    assert added == {"tag": "vip", "requested": 1, "changed": 1}
    assert api("PUT", "/api/v1/contacts/dormant/tags/vip")["changed"] == 0
    assert {"tag": "vip", "contacts": 1} in [
        {k: t[k] for k in ("tag", "contacts")} for t in api("GET", "/api/v1/tags")
    ]
    assert api("DELETE", "/api/v1/contacts/dormant/tags/vip")["changed"] == 1
    history = api("GET", "/api/v1/contacts/dormant/tags")
    assert history["tags"] == []
    assert [(h["tag"], h["action"], h["source"]) for h in history["history"]] == [
        ("vip", "added", "api:crm"),
        ("vip", "removed", "api:crm"),
    ]
    with ws.engine.connect() as conn:
        assert conn.execute(
            select(tag_history.c.action).where(tag_history.c.tag == "vip")
        ).scalars().all() == ["added", "removed"]
    assert api("PUT", "/api/v1/contacts/nobody/tags/vip", 404)
    assert api("PUT", "/api/v1/contacts/dormant/tags/%20", 422)


def test_a_busy_store_answers_503_with_retry_after(workspace: Workspace) -> None:
    ws = configure(workspace, store_busy_timeout=0.2)
    crafted_shop(ws)
    with running_service(ws) as base:
        api = Api(base, new_api_key(ws, "crm", Scope.MANAGE))
        with _store_locked(ws):
            answer = api.client.post(
                "/api/v1/contacts/dormant/consent", json={"channel": "email", "status": "revoked"}
            )
        assert answer.status_code == 503
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.json()["retry_after"] == int(answer.headers["Retry-After"])
        after = api(
            "POST",
            "/api/v1/contacts/dormant/consent",
            json={"channel": "email", "status": "revoked"},
        )
    assert after["changed"] is True  # nothing was written by the refused one


def test_docs_are_served_from_the_package(sqlite_workspace: Workspace) -> None:
    key = new_api_key(sqlite_workspace, "reader", Scope.READ)
    with running_service(sqlite_workspace) as base:
        auth = {"Authorization": f"Bearer {key}"}
        page = httpx.get(f"{base}/docs", headers=auth)
        anonymous = httpx.get(f"{base}/docs", follow_redirects=False)
        schema = httpx.get(f"{base}/openapi.json", headers=auth)
        no_schema = httpx.get(f"{base}/openapi.json")
        redoc = httpx.get(f"{base}/redoc", headers=auth)
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assets = {u: httpx.get(base + u, headers=auth).status_code for u in urls}
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    assert len(urls) >= 4 and all(u.startswith("/") and not u.startswith("//") for u in urls)
    assert all(status == 200 for status in assets.values()), assets
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    assert schema.status_code == 200 and "/api/v1/segments/{name}/members" in schema.json()["paths"]
    assert no_schema.status_code == 401
    assert redoc.status_code == 404


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
def test_docs_render_offline_in_chromium(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    """Swagger UI draws the management API's operations in Chromium, and the page asks
    nothing of any host but the server."""
    from playwright.sync_api import sync_playwright

    key = new_api_key(sqlite_workspace, "reader", Scope.READ)
    with running_service(sqlite_workspace) as base, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            headless=True,
        )
        try:
            context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {key}"})
            page = context.new_page()
            asked: list[str] = []
            page.on("request", lambda request: asked.append(request.url))
            page.goto(f"{base}/docs")
            page.wait_for_selector("[data-path='/api/v1/segments/{name}/members']", timeout=15_000)
            shown = page.eval_on_selector_all(
                "[data-path]", "nodes => nodes.map(n => n.getAttribute('data-path'))"
            )
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
        finally:
            browser.close()
    assert "/api/v1/contacts/{contact}/consent" in shown and "/api/v1/flows" in shown
    assert f"{base}/openapi.json" in asked
    outside = [u for u in asked if not u.startswith(base) and not u.startswith("data:")]
    assert outside == []
