"""Signing in to the real service as a browser does: fetch the form, post it back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from winback import accounts
from winback.workspace import Workspace

PASSWORD = "correct horse battery staple"


def add_user(ws: Workspace, name: str = "alice", password: str = PASSWORD) -> accounts.User:
    return accounts.add_user(ws.engine, name, password, at=ws.clock.now())


def form_token(html: str, field: str = "csrf_token") -> str:
    found = re.search(rf'name="{field}" value="([^"]*)"', html)
    assert found, f"no {field} in the page"
    return found.group(1)


def post_login(
    client: httpx.Client, name: str, password: str, *, next_url: str | None = None
) -> httpx.Response:
    """GET /login, then POST the form with its token (as a browser would)."""
    page = client.get("/login", params={"next": next_url} if next_url else None)
    data = {"username": name, "password": password, "csrf_token": form_token(page.text)}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/login", data=data)


@contextmanager
def signed_in(base: str, name: str = "alice", password: str = PASSWORD) -> Iterator[httpx.Client]:
    """A client (cookie jar) signed in as ``name``."""
    with httpx.Client(base_url=base, follow_redirects=False) as client:
        answer = post_login(client, name, password)
        assert answer.status_code == 303, answer.text
        yield client
