from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from winback.errors import NotFound
from winback.store.schema import consent_log, tag_history
from winback.workspace import Workspace


def test_ensure_contacts_creates_unknown_and_reuses_known(workspace: Workspace) -> None:
    now = workspace.clock.now()
    with workspace.engine.begin() as conn:
        first = workspace.store.ensure_contacts(["c1", "c2"], at=now, conn=conn)
    with workspace.engine.begin() as conn:
        second = workspace.store.ensure_contacts(["c2", "c3"], at=now, conn=conn)
    assert second["c2"] == first["c2"]
    assert len({first["c1"], first["c2"], second["c3"]}) == 3
    assert workspace.store.count_contacts() == 3
    assert workspace.store.get_contact("c1")["created_at"] == now


def test_times_come_back_as_utc(workspace: Workspace) -> None:
    now = workspace.clock.now()
    with workspace.engine.begin() as conn:
        workspace.store.ensure_contacts(["c1"], at=now, conn=conn)
    got = workspace.store.get_contact("c1")["created_at"]
    assert got == now and got.utcoffset() == timedelta(0)


def test_tags_have_history_and_are_idempotent(workspace: Workspace) -> None:
    now = workspace.clock.now()
    with workspace.engine.begin() as conn:
        ids = workspace.store.ensure_contacts(["c1", "c2"], at=now, conn=conn)
    assert workspace.store.add_tag([ids["c1"]], "inactive", at=now, source="test") == [ids["c1"]]
    both = [ids["c1"], ids["c2"]]
    assert workspace.store.add_tag(both, "inactive", at=now, source="test") == [ids["c2"]]
    assert workspace.store.remove_tag(both, "inactive", at=now, source="flow") == sorted(both)
    assert workspace.store.tags_of(ids["c1"]) == []
    with workspace.engine.connect() as conn:
        actions = (
            conn.execute(
                select(tag_history.c.action)
                .where(tag_history.c.contact_id == ids["c1"])
                .order_by(tag_history.c.id)
            )
            .scalars()
            .all()
        )
    assert actions == ["added", "removed"]


def test_consent_change_is_logged_once(workspace: Workspace) -> None:
    now = workspace.clock.now()
    with workspace.engine.begin() as conn:
        cid = workspace.store.ensure_contacts(["c1"], at=now, conn=conn)["c1"]
    assert workspace.store.set_consent(cid, "email", True, at=now, source="import")
    assert not workspace.store.set_consent(cid, "email", True, at=now, source="import")
    assert workspace.store.set_consent(cid, "email", False, at=now, source="unsubscribe")
    assert workspace.store.get_contact("c1")["email_consent"] is False
    with workspace.engine.connect() as conn:
        rows = conn.execute(
            select(consent_log.c.granted, consent_log.c.source).order_by(consent_log.c.id)
        ).all()
    assert [tuple(r) for r in rows] == [(True, "import"), (False, "unsubscribe")]
    with pytest.raises(ValueError, match="unknown channel"):
        workspace.store.set_consent(cid, "fax", True, at=now, source="x")


def test_unknown_contact_is_named(workspace: Workspace) -> None:
    with pytest.raises(NotFound, match="'nobody'"):
        workspace.store.get_contact("nobody")


def test_sqlite_connections_use_wal_and_bound_its_file(sqlite_workspace: Workspace) -> None:
    """Every SQLite connection runs in WAL mode, waits for a busy writer, and cuts the WAL
    file back to 64 MiB after a checkpoint (a large tick can grow it to a gigabyte)."""
    with sqlite_workspace.engine.connect() as conn:
        pragma = conn.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar_one() == "wal"
        assert pragma("PRAGMA busy_timeout").scalar_one() == 10_000  # store_busy_timeout
        assert pragma("PRAGMA journal_size_limit").scalar_one() == 64 * 1024 * 1024
