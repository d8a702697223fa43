"""A flow's statistics (``flows stats``, ``GET /api/v1/flows/{name}``): exits by reason and
holdout vs treatment counted over every entry of the flow and of no other flow."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from tests.conftest import T0
from tests.flows.helpers import make_contacts
from winback.store.schema import flow_entries, flows
from winback.workspace import Workspace

FLOW = """
name: {name}
trigger: {{tag_added: go}}
steps:
  - send: {{template: hello}}
"""

# (status, step, exit_reason, holdout) of each entry of the flow under test
ENTRIES = [
    ("active", "s0", None, False),
    ("active", "s0", None, True),
    ("active", "s0", None, False),
    ("exited", None, "reactivated", False),
    ("exited", None, "reactivated", True),
    ("exited", None, "completed", False),
    ("exited", None, "completed", False),
    ("exited", None, "completed", True),
    ("exited", None, None, False),
    ("exited", None, "unsubscribed", True),
]


def test_exits_and_holdout_cover_every_entry_of_the_flow(workspace: Workspace) -> None:
    ws = workspace
    for key in ("measured", "other"):
        Path(ws.path / "flows" / f"{key}.yaml").write_text(FLOW.format(name=key), "utf-8")
    ws.flows.sync(T0)
    people = make_contacts(ws, len(ENTRIES) + 3, at=T0)
    with ws.engine.begin() as conn:
        ids = dict(conn.execute(select(flows.c.key, flows.c.id)).all())
        rows = [
            {"flow_id": ids["measured"], "contact_id": cid, "status": status, "step": step,
             "exit_reason": reason, "holdout": held}
            for cid, (status, step, reason, held) in zip(people, ENTRIES, strict=False)
        ] + [
            {"flow_id": ids["other"], "contact_id": cid, "status": "exited", "step": None,
             "exit_reason": "completed", "holdout": True}
            for cid in people[len(ENTRIES):]
        ]  # fmt: skip
        conn.execute(
            insert(flow_entries),
            [
                r | {"entered_at": T0, "step_at": T0 + timedelta(hours=1), "waiting": False}
                for r in rows
            ],
        )
    stats = ws.flows.stats("measured")
    assert stats["entered"] == 10
    assert stats["active_per_step"] == {"s0": 3}
    assert stats["exits"] == {"": 1, "completed": 3, "reactivated": 2, "unsubscribed": 1}
    assert list(stats["exits"]) == ["", "completed", "reactivated", "unsubscribed"]
    assert (stats["holdout"], stats["treatment"]) == (4, 6)
    other = ws.flows.stats("other")
    assert (other["entered"], other["exits"], other["holdout"]) == (3, {"completed": 3}, 3)
