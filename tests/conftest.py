"""Shared fixtures. Every store test runs on SQLite and on a real PostgreSQL cluster that
this test run starts on a loopback port and stops at the end."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

import winback
from tests.pgcluster import PostgresCluster
from winback.clock import FixedClock
from winback.workspace import Workspace

#: Lists the tests whose ``slow`` marker does not match their time, at the end of a run.
pytest_plugins = ["tests.slow_marker"]

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    if os.environ.get("WINBACK_TEST_NO_POSTGRES"):
        pytest.skip("WINBACK_TEST_NO_POSTGRES is set")
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated workspace, made once and copied per test (migrations take a while)."""
    folder = tmp_path_factory.mktemp("template") / "ws"
    winback.init(folder, environ={}).close()
    return folder


@pytest.fixture(scope="session")
def _pg_template(pg_cluster: PostgresCluster) -> str:
    url = pg_cluster.create_database("winback_template")
    from winback.store.engine import make_engine
    from winback.store.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return "winback_template"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def _sqlite_workspace(template: Path, tmp_path: Path, clock: FixedClock) -> Workspace:
    folder = tmp_path / "ws"
    shutil.copytree(template, folder)
    return winback.open(folder, clock=clock, environ={})


def _pg_workspace(
    cluster: PostgresCluster, template: str, tmp_path: Path, clock: FixedClock
) -> Workspace:
    name = f"t{os.getpid()}_{next(_counter)}"
    url = cluster.create_database(name, template=template)
    folder = tmp_path / "ws"
    winback.init(folder, environ={"WINBACK_DATABASE_URL": url}).close()
    return winback.open(folder, clock=clock, environ={"WINBACK_DATABASE_URL": url})


@pytest.fixture(params=["sqlite", "postgres"])
def workspace(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock
) -> Iterator[Workspace]:
    """A fresh, migrated workspace on each database, with a fixed clock at ``T0``."""
    if request.param == "sqlite":
        ws = _sqlite_workspace(request.getfixturevalue("_sqlite_template"), tmp_path, clock)
    else:
        cluster = request.getfixturevalue("pg_cluster")
        ws = _pg_workspace(cluster, request.getfixturevalue("_pg_template"), tmp_path, clock)
    try:
        yield ws
    finally:
        ws.close()
        if request.param == "postgres":
            # Dropping as we go keeps the throwaway cluster small (hundreds of test databases
            # otherwise make its removal at the end of the run take minutes).
            name = make_url(ws.database_url).database
            request.getfixturevalue("pg_cluster").drop_database(name or "")


@pytest.fixture
def sqlite_workspace(
    _sqlite_template: Path, tmp_path: Path, clock: FixedClock
) -> Iterator[Workspace]:
    """A fresh SQLite workspace only, for tests that are not about the store."""
    ws = _sqlite_workspace(_sqlite_template, tmp_path, clock)
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with the smallest cost (for tests that sign in many times): the same code
    paths, a millisecond per hash instead of a quarter second."""
    from argon2 import PasswordHasher

    import winback.accounts

    monkeypatch.setattr(
        winback.accounts,
        "_hasher",
        PasswordHasher(time_cost=1, memory_cost=64, parallelism=1),
    )
    winback.accounts._decoy_hash.cache_clear()
