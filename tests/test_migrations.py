from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from winback.store import migrate
from winback.store.schema import metadata
from winback.workspace import Workspace


def test_migrations_build_exactly_the_schema(workspace: Workspace) -> None:
    """The tables the migrations create are the tables the code declares."""
    assert migrate.is_current(workspace.engine)
    with workspace.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def test_upgrade_twice_is_a_no_op(workspace: Workspace) -> None:
    before = migrate.current_revisions(workspace.engine)
    workspace.upgrade()
    assert migrate.current_revisions(workspace.engine) == before
