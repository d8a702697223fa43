"""The dashboard's shell: pages refuse anonymous requests, the vendored assets are served
from the package, and nothing is loaded from elsewhere."""

from __future__ import annotations

import httpx

from tests.web_support import new_api_key, running_service
from winback.workspace import Workspace


def test_an_anonymous_browser_is_sent_to_the_login_form(sqlite_workspace: Workspace) -> None:
    with running_service(sqlite_workspace) as base:
        answer = httpx.get(f"{base}/?x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/%3Fx%3D1"


def test_a_wrong_api_key_is_refused_and_not_redirected(sqlite_workspace: Workspace) -> None:
    new_api_key(sqlite_workspace, "reader")
    with running_service(sqlite_workspace) as base:
        answer = httpx.get(f"{base}/", headers={"Authorization": "Bearer wbk_wrong"})
    assert answer.status_code == 401


def test_vendored_assets_are_served_from_the_package(sqlite_workspace: Workspace) -> None:
    with running_service(sqlite_workspace) as base:
        htmx = httpx.get(f"{base}/static/vendor/htmx/htmx.min.js")
        css = httpx.get(f"{base}/static/dashboard.css")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:2000]
    assert css.status_code == 200 and "--accent" in css.text
