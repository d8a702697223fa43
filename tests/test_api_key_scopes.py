"""API key scopes: what each scope may do over real HTTP, `winback api-keys --scope`, and a
key made before scopes keeping its power (the event API) through the migration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text
from typer.testing import CliRunner

import winback
from tests.pgcluster import PostgresCluster
from tests.web_support import new_api_key, running_service
from winback.cli import app
from winback.clock import FixedClock
from winback.store import apikeys
from winback.store.apikeys import GRANTS, Scope
from winback.store.engine import make_engine
from winback.store.migrate import upgrade
from winback.workspace import Workspace

EVENT = {"customer_id": "c1", "type": "page_view", "event_id": "e1"}

pytestmark = pytest.mark.usefixtures("cheap_passwords")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_each_scope_opens_its_routes_only(workspace: Workspace) -> None:
    events = new_api_key(workspace, "shop")
    read = new_api_key(workspace, "reader", Scope.READ)
    manage = new_api_key(workspace, "admin", Scope.MANAGE)
    with running_service(workspace) as base, httpx.Client(base_url=base) as client:
        # The event API (the fast routes) and provider reports: events only.
        assert client.post("/api/v1/events", json=EVENT, headers=_bearer(events)).status_code == 202
        for key in (read, manage):
            refused = client.post("/api/v1/events", json=EVENT, headers=_bearer(key))
            assert refused.status_code == 403 and "'events' scope" in refused.json()["detail"]
            batch = client.post(
                "/api/v1/events/batch", json={"events": [EVENT]}, headers=_bearer(key)
            )
            assert batch.status_code == 403
            report = client.post(
                "/api/v1/feedback-reports", json={"reports": []}, headers=_bearer(key)
            )
            assert report.status_code == 403
        # Reading: read and manage; an events key is refused (403, not 401: it is a key).
        assert client.get("/api/v1/segments", headers=_bearer(events)).status_code == 403
        assert client.get("/overview", headers=_bearer(events)).status_code == 403
        for key in (read, manage):
            assert client.get("/api/v1/segments", headers=_bearer(key)).status_code == 200
        # Changing: manage only.
        pause = "/api/v1/flows/reactivation/pause"
        refused = client.post(pause, headers=_bearer(read))
        assert refused.status_code == 403 and "'manage' scope" in refused.json()["detail"]
        assert client.post(pause, headers=_bearer(events)).status_code == 403
        assert client.post(pause, headers=_bearer(manage)).status_code not in (401, 403)


def test_manage_implies_read_but_not_events() -> None:
    assert GRANTS[Scope.MANAGE] == {Scope.READ, Scope.MANAGE}
    assert GRANTS[Scope.READ] == {Scope.READ} and GRANTS[Scope.EVENTS] == {Scope.EVENTS}


def test_api_keys_cli_creates_and_lists_scopes(sqlite_workspace: Workspace) -> None:
    runner = CliRunner()
    w = ["-w", str(sqlite_workspace.path)]
    made = runner.invoke(app, ["api-keys", "create", "crm", "--scope", "manage", *w])
    assert made.exit_code == 0, made.output
    found = apikeys.lookup(sqlite_workspace.engine, made.stdout.strip())
    assert found is not None and found.scope is Scope.MANAGE
    assert runner.invoke(app, ["api-keys", "create", "shop", *w]).exit_code == 0
    bad = runner.invoke(app, ["api-keys", "create", "x", "--scope", "admin", *w])
    assert "expected one of: events, read, manage" in str(bad.exception)
    listed = json.loads(runner.invoke(app, ["api-keys", "list", "--json", *w]).stdout)
    assert {k["name"]: k["scope"] for k in listed} == {"crm": "manage", "shop": "events"}
    table = runner.invoke(app, ["api-keys", "list", *w]).stdout
    assert "scope" in table and "manage" in table


@pytest.fixture(params=["sqlite", "postgres"])
def database_before_scopes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database migrated up to the revision before accounts and key scopes (0006)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"before_scopes_{tmp_path.name[-20:]}".lower().replace("-", "_")
    yield cluster.create_database(name)
    cluster.drop_database(name)


def test_a_key_made_before_scopes_still_posts_events(
    database_before_scopes: str, tmp_path: Path, clock: FixedClock
) -> None:
    engine = make_engine(database_before_scopes)
    upgrade(engine, "0006")
    key = apikeys.PREFIX + "made-before-scopes-existed-0123456789"
    with engine.begin() as conn:
        columns = [c["name"] for c in inspect(conn).get_columns("api_keys")]
        assert "scope" not in columns
        conn.execute(
            text(
                "INSERT INTO api_keys (name, key_hash, prefix, created_at) "
                "VALUES ('old-shop', :h, :p, :at)"
            ),
            {"h": apikeys.key_hash(key), "p": key[:10], "at": clock.now()},
        )
    engine.dispose()
    environ = {"WINBACK_DATABASE_URL": database_before_scopes}
    winback.init(tmp_path / "ws", environ=environ).close()  # migrates to the head
    ws = winback.open(tmp_path / "ws", clock=clock, environ=environ)
    try:
        found = apikeys.lookup(ws.engine, key)
        assert found is not None and found.scope is Scope.EVENTS
        with running_service(ws) as base:
            posted = httpx.post(f"{base}/api/v1/events", json=EVENT, headers=_bearer(key))
            read = httpx.get(f"{base}/api/v1/segments", headers=_bearer(key))
        assert posted.status_code == 202
        assert read.status_code == 403
    finally:
        ws.close()
