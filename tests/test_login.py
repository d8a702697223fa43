"""Signing in to the dashboard over real HTTP (uvicorn on 127.0.0.1): the session cookie and
its flags, one answer for a wrong password and an unknown user, logging out, a password
change ending sessions, CSRF on session-authenticated changes, no open redirect, and the
slow-down after repeated failures."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import event

import winback
from tests.login_support import PASSWORD, add_user, form_token, post_login, signed_in
from tests.web_support import running_app, running_service
from winback import accounts
from winback.accounts import LoginThrottle
from winback.clock import FixedClock
from winback.store import apikeys
from winback.store.apikeys import Scope
from winback.web.app import create_app
from winback.web.auth import ManageDep
from winback.web.routes.login import safe_next
from winback.web.sessions import SESSION_COOKIE, SessionRing, SessionSigner
from winback.workspace import Workspace

pytestmark = pytest.mark.usefixtures("cheap_passwords")


def _home_of(client: httpx.Client) -> str:
    """Where the dashboard's start page sends this client: the overview when signed in,
    the login form when anonymous."""
    answer = client.get("/")
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def _set_cookie(answer: httpx.Response, name: str) -> str:
    found = [c for c in answer.headers.get_list("set-cookie") if c.startswith(name + "=")]
    assert len(found) == 1, answer.headers.get_list("set-cookie")
    return found[0]


def test_sign_in_sets_a_signed_httponly_lax_session_cookie(
    workspace: Workspace, clock: FixedClock
) -> None:
    add_user(workspace)
    with running_service(workspace) as base, httpx.Client(base_url=base) as client:
        assert _home_of(client) == "/login?next=/"
        form = client.get("/login")
        assert form.status_code == 200 and 'name="password"' in form.text
        assert "/static/dashboard.css" in form.text and 'action="/logout"' not in form.text
        answer = post_login(client, "Alice", PASSWORD, next_url="/flows?status=live")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/flows?status=live"
        cookie = _set_cookie(answer, SESSION_COOKIE)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
        assert f"Max-Age={12 * 3600}" in cookie and "Path=/" in cookie
        assert _home_of(client) == "/overview"
        # The cookie is signed: another value of the same shape is anonymous.
        value = client.cookies[SESSION_COOKIE]
        token, _, signature = value.rpartition(".")
        forged = httpx.Client(base_url=base, cookies={SESSION_COOKIE: f"{token}.{'A' * 43}"})
        assert _home_of(forged).startswith("/login")
        forged.close()
    listed = accounts.list_users(workspace.engine, at=clock.now())
    assert listed[0]["last_login_at"] == clock.now() and listed[0]["sessions"] == 1


def test_the_session_expires_after_session_hours(
    sqlite_workspace: Workspace, clock: FixedClock
) -> None:
    add_user(sqlite_workspace)
    with running_service(sqlite_workspace) as base, signed_in(base) as client:
        assert _home_of(client) == "/overview"
        clock.advance(timedelta(hours=12))
        assert _home_of(client).startswith("/login")


def test_cookies_are_secure_when_base_url_is_https(
    sqlite_workspace: Workspace, clock: FixedClock
) -> None:
    add_user(sqlite_workspace)
    https = winback.open(
        Path(sqlite_workspace.path),
        clock=clock,
        environ={"WINBACK_BASE_URL": "https://winback.example", "WINBACK_SESSION_HOURS": "2"},
    )
    try:
        with running_service(https) as base, httpx.Client(base_url=base) as client:
            page = client.get("/login")
            assert "Secure" in _set_cookie(page, "winback_login")
            token = form_token(page.text)
            # httpx keeps Secure cookies from plain http: send the form cookie by hand.
            nonce = _set_cookie(page, "winback_login").split(";")[0].split("=", 1)[1]
            answer = client.post(
                "/login",
                data={"username": "alice", "password": PASSWORD, "csrf_token": token},
                headers={"Cookie": f"winback_login={nonce}"},
            )
            cookie = _set_cookie(answer, SESSION_COOKIE)
    finally:
        https.close()
    assert answer.status_code == 303
    assert "Secure" in cookie and "HttpOnly" in cookie and f"Max-Age={2 * 3600}" in cookie


@pytest.fixture
def lenient_service(sqlite_workspace: Workspace) -> Iterator[str]:
    """The service with a throttle that never slows down (for tests of other things)."""
    app = create_app(sqlite_workspace)
    app.state.login_throttle = LoginThrottle(free_failures=1000)
    with running_app(app) as base:
        yield base


@pytest.mark.slow
def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    sqlite_workspace: Workspace, lenient_service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher())  # the real cost, to time it
    accounts._decoy_hash.cache_clear()
    add_user(sqlite_workspace, "alice")
    times: dict[str, list[float]] = {"alice": [], "nobodyx": []}
    bodies: dict[str, str] = {}
    with httpx.Client(base_url=lenient_service) as client:
        for _ in range(4):
            for name in times:
                page = client.get("/login")
                data = {"username": name, "password": "wrong password!", "csrf_token": ""}
                data["csrf_token"] = form_token(page.text)
                started = time.perf_counter()
                answer = client.post("/login", data=data)
                times[name].append(time.perf_counter() - started)
                assert answer.status_code == 401
                assert SESSION_COOKIE not in answer.cookies
                bodies[name] = answer.text.replace(name, "NAME")
    assert bodies["alice"] == bodies["nobodyx"]
    assert "Wrong user name or password." in bodies["alice"]
    known, unknown = (statistics.median(times[n]) for n in ("alice", "nobodyx"))
    # Both verify an Argon2 hash (the unknown user a decoy): the same work, within noise.
    assert 0.5 < known / unknown < 2.0, (known, unknown)


def test_the_login_form_needs_its_csrf_token(
    sqlite_workspace: Workspace, lenient_service: str
) -> None:
    add_user(sqlite_workspace)
    with httpx.Client(base_url=lenient_service) as client:
        client.get("/login")
        data = {"username": "alice", "password": PASSWORD}
        assert client.post("/login", data=data).status_code == 403
        refused = client.post("/login", data={**data, "csrf_token": "A" * 43})
        assert refused.status_code == 403 and SESSION_COOKIE not in refused.cookies
        # A token without its cookie (another browser's form) is refused too.
        token = form_token(client.get("/login").text)
        alone = httpx.post(f"{lenient_service}/login", data={**data, "csrf_token": token})
        assert alone.status_code == 403
        assert client.post("/login", data={**data, "csrf_token": token}).status_code == 303


def test_logout_ends_the_session(sqlite_workspace: Workspace) -> None:
    add_user(sqlite_workspace)
    with running_service(sqlite_workspace) as base, signed_in(base) as client:
        stolen = client.cookies[SESSION_COOKIE]
        assert client.post("/logout").status_code == 403  # no CSRF token
        assert _home_of(client) == "/overview"
        answer = client.post("/logout", data={"csrf_token": _csrf(sqlite_workspace, stolen)})
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
        assert 'winback_session=""' in _set_cookie(answer, SESSION_COOKIE)
        assert _home_of(client).startswith("/login")
        replay = httpx.Client(base_url=base, cookies={SESSION_COOKIE: stolen})
        assert _home_of(replay).startswith("/login")  # ended in the store, not only forgotten
        replay.close()
    assert (
        accounts.list_users(sqlite_workspace.engine, at=sqlite_workspace.clock.now())[0]["sessions"]
        == 0
    )


def _csrf(ws: Workspace, cookie: str) -> str:
    """The CSRF token of the session in ``cookie`` (what the pages render)."""
    signer = SessionSigner(ws.settings.secret_key or "")
    token = signer.token(cookie)
    assert token is not None
    return signer.csrf(token)


def test_a_password_change_ends_sessions_in_other_processes_within_the_cache_time(
    workspace: Workspace,
) -> None:
    add_user(workspace)
    seconds = [0.0]
    app = create_app(workspace)
    app.state.sessions = SessionRing(
        workspace.engine, workspace.clock.now, monotonic=lambda: seconds[0]
    )
    with running_app(app) as base, signed_in(base) as client:
        assert _home_of(client) == "/overview"
        accounts.set_password(
            workspace.engine, "alice", "a new long password", at=workspace.clock.now()
        )
        seconds[0] = 4.9
        assert _home_of(client) == "/overview"  # still cached (CACHE_SECONDS)...
        seconds[0] = 5.1
        assert _home_of(client).startswith("/login")  # ...then read again: ended
        assert post_login(client, "alice", PASSWORD).status_code == 401
        assert post_login(client, "alice", "a new long password").status_code == 303


def _app_with_probe(ws: Workspace) -> FastAPI:
    """The service with one more route needing the manage scope (as the management API's
    changes do), to exercise CSRF and scopes on a route outside the dashboard."""
    app = create_app(ws)

    @app.post("/api/v1/probe")
    async def probe(who: ManageDep) -> dict[str, str]:
        return {"kind": who.kind, "name": who.name}

    @app.delete("/api/v1/probe")
    async def probe_delete(who: ManageDep) -> dict[str, str]:
        return {"kind": who.kind, "name": who.name}

    return app


def test_session_changes_need_the_csrf_token_and_key_requests_do_not(
    sqlite_workspace: Workspace,
) -> None:
    add_user(sqlite_workspace)
    manager = apikeys.create(
        sqlite_workspace.engine, "manager", at=sqlite_workspace.clock.now(), scope=Scope.MANAGE
    )
    with running_app(_app_with_probe(sqlite_workspace)) as base, signed_in(base) as client:
        token = _csrf(sqlite_workspace, client.cookies[SESSION_COOKIE])
        assert client.post("/api/v1/probe").status_code == 403
        assert client.post("/api/v1/probe", headers={"X-CSRF-Token": "nope"}).status_code == 403
        assert client.delete("/api/v1/probe").status_code == 403
        ok = client.post("/api/v1/probe", headers={"X-CSRF-Token": token})
        assert ok.status_code == 200 and ok.json() == {"kind": "user", "name": "alice"}
        assert client.post("/api/v1/probe", data={"csrf_token": token}).status_code == 200
        assert client.delete("/api/v1/probe", headers={"X-CSRF-Token": token}).status_code == 200
        by_key = httpx.post(f"{base}/api/v1/probe", headers={"Authorization": f"Bearer {manager}"})
        assert by_key.status_code == 200 and by_key.json()["kind"] == "key"
        assert httpx.post(f"{base}/api/v1/probe").status_code == 401


@pytest.mark.parametrize(
    ("target", "followed"),
    [
        ("/flows/reactivation?tab=results", "/flows/reactivation?tab=results"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/%5C%5Cevil.example", "/%5C%5Cevil.example"),  # a path here, not a host
        ("javascript:alert(1)", "/"),
        ("/\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
    ],
)
def test_next_is_followed_only_within_the_site(target: str, followed: str) -> None:
    assert safe_next(target) == followed


def test_no_open_redirect_after_sign_in(sqlite_workspace: Workspace, lenient_service: str) -> None:
    add_user(sqlite_workspace)
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example"):
        with httpx.Client(base_url=lenient_service) as client:
            answer = post_login(client, "alice", PASSWORD, next_url=target)
            assert answer.status_code == 303 and answer.headers["location"] == "/"
            again = client.get("/login", params={"next": target})
            assert again.status_code == 303 and again.headers["location"] == "/"


def test_repeated_failures_slow_down_even_the_right_password_then_recover(
    workspace: Workspace, clock: FixedClock
) -> None:
    add_user(workspace)
    throttle = LoginThrottle(free_failures=3)  # fewer hashes than the default 5: quicker
    app = create_app(workspace)
    app.state.login_throttle = throttle
    with running_app(app) as base, httpx.Client(base_url=base) as client:
        for n in range(throttle.free_failures):
            assert post_login(client, "alice", f"guess number {n}").status_code == 401
        blocked = post_login(client, "alice", PASSWORD)
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "2"
        assert SESSION_COOKIE not in blocked.cookies
        # An unknown name from the same address is slowed down the same way.
        assert post_login(client, "mallory", PASSWORD).status_code == 429
        clock.advance(timedelta(seconds=2))
        assert post_login(client, "alice", "one more guess").status_code == 401
        again = post_login(client, "alice", PASSWORD)
        assert again.status_code == 429 and again.headers["retry-after"] == "4"
        clock.advance(throttle.window)
        assert post_login(client, "alice", PASSWORD).status_code == 303


def test_signing_in_again_ends_the_browsers_former_session(sqlite_workspace: Workspace) -> None:
    add_user(sqlite_workspace)
    with running_service(sqlite_workspace) as base:
        with signed_in(base) as client:
            first = client.cookies[SESSION_COOKIE]
        with httpx.Client(base_url=base) as browser:
            token = form_token(browser.get("/login").text)  # a form left open in a tab
            browser.cookies.set(SESSION_COOKIE, first)
            answer = browser.post(
                "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
            )
            assert answer.status_code == 303
            second = answer.cookies[SESSION_COOKIE]
        assert second != first
        with httpx.Client(base_url=base, cookies={SESSION_COOKIE: second}) as new:
            assert _home_of(new) == "/overview"
        with httpx.Client(base_url=base, cookies={SESSION_COOKIE: first}) as old:
            assert _home_of(old).startswith("/login")
    users = accounts.list_users(sqlite_workspace.engine, at=sqlite_workspace.clock.now())
    assert users[0]["sessions"] == 1


def test_a_session_is_read_once_and_never_written_by_requests(
    sqlite_workspace: Workspace,
) -> None:
    add_user(sqlite_workspace)
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "user_sessions" in statement.lower():
            seen.append(statement.lstrip().upper())

    with running_service(sqlite_workspace) as base, signed_in(base) as client:
        event.listen(sqlite_workspace.engine, "before_cursor_execute", record)
        try:
            for _ in range(20):
                assert _home_of(client) == "/overview"
        finally:
            event.remove(sqlite_workspace.engine, "before_cursor_execute", record)
    assert len(seen) == 1 and seen[0].startswith("SELECT"), seen
