from __future__ import annotations

from typing import Any

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


def test_one_head() -> None:
    """The migrations form one line of history at the top: a new migration follows the
    current head (``down_revision`` = the head), or a merge revision joins the branches."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    heads = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_heads()
    assert len(heads) == 1, heads


def test_upgrade_twice_is_a_no_op(workspace: Workspace) -> None:
    before = migrate.current_revisions(workspace.engine)
    workspace.upgrade()
    assert migrate.current_revisions(workspace.engine) == before


def test_flows_003_carries_the_step_log_over_to_paths_and_counts(workspace: Workspace) -> None:
    """Upgrading a store that has a step log keeps what it recorded: each entry's path in
    log order and the outcome counts per step."""
    from alembic import command
    from sqlalchemy import text

    from tests.conftest import T0

    engine = workspace.engine
    with engine.begin() as conn:
        cid = workspace.store.ensure_contacts(["m1"], at=T0, conn=conn)["m1"]
    command.downgrade(migrate.alembic_config(engine), "f2_flows")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO flows (id, key, name, definition, version, status, updated_at) "
                "VALUES (1, 'f', 'F', '{}', 1, 'enabled', :t)"
            ),
            {"t": T0},
        )
        for entry in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO flow_entries (id, flow_id, contact_id, entered_at, step, step_at, "
                    "status, waiting, holdout) VALUES (:e, 1, :c, :t, 's2', :t, 'exited', "
                    ":f, :f)"
                ),
                {"e": entry, "c": cid, "t": T0, "f": False},
            )
        log = [(1, "s0", "queued"), (2, "s0", "no_consent"), (1, "s2", "then"), (2, "s2", "else")]
        for entry, step, outcome in log:
            conn.execute(
                text(
                    "INSERT INTO flow_step_log (flow_id, entry_id, step, at, outcome) "
                    "VALUES (1, :e, :s, :t, :o)"
                ),
                {"e": entry, "s": step, "t": T0, "o": outcome},
            )
    workspace.upgrade()
    with engine.connect() as conn:
        paths: dict[Any, Any] = dict(conn.execute(text("SELECT id, path FROM flow_entries")).all())
        counts = set(conn.execute(text("SELECT step, outcome, n FROM flow_step_counts")).all())
    assert paths == {1: "s0=queued > s2=then", 2: "s0=no_consent > s2=else"}
    assert counts == {
        ("s0", "queued", 1),
        ("s0", "no_consent", 1),
        ("s2", "then", 1),
        ("s2", "else", 1),
    }
