"""The trigger watermark never skips a row that commits after a higher id was seen."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from tests.conftest import T0
from tests.flows.helpers import entries, make_contacts
from winback.workspace import Workspace

FLOW = """
name: Tagged welcome
trigger: {tag_added: go}
steps:
  - send: {template: hello}
"""


def test_a_tag_committed_late_with_a_lower_id_still_enrols(workspace: Workspace) -> None:
    ws = workspace
    if ws.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: ids are committed in order")
    slow_contact, fast_contact = make_contacts(ws, 2, at=T0)
    (ws.path / "flows" / "welcome.yaml").write_text(FLOW, encoding="utf-8")
    ws.flows.enable("welcome", now=T0)

    # A slow ingestion transaction takes the lower tag_history id and commits late ...
    slow = ws.engine.connect()
    slow_tx = slow.begin()
    ws.store.add_tag([slow_contact], "go", at=T0, source="slow", conn=slow)
    # ... while a fast one takes the next id and commits at once.
    ws.store.add_tag([fast_contact], "go", at=T0, source="fast")

    def commit_later() -> None:
        time.sleep(0.5)
        slow_tx.commit()
        slow.close()

    committer = threading.Thread(target=commit_later)
    committer.start()
    try:
        ws.flows.tick(T0)
    finally:
        committer.join()
    ws.flows.tick(T0 + timedelta(minutes=1))

    assert set(entries(ws, "welcome")) == {slow_contact, fast_contact}
