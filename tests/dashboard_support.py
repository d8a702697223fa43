"""A small generated shop in a workspace, analysed and with its segments refreshed, for the
dashboard's page tests; and reading figures out of a page."""

from __future__ import annotations

import re
from pathlib import Path

from winback.generator import generate_shop
from winback.workspace import Workspace


def small_shop(ws: Workspace, tmp_path: Path, *, customers: int = 200) -> None:
    """Import a generated shop ending at the workspace clock's day, refresh the segments
    (which takes the day's snapshots) and analyse it."""
    shop = generate_shop(
        tmp_path / "shop",
        customers=customers,
        months=8,
        seed=7,
        end=ws.clock.now().date(),
        dirty_share=0.0,
    )
    for kind in ("contacts", "orders", "events"):
        getattr(ws.imports, kind)(shop.out_dir / f"{kind}.csv")
    ws.segments.refresh()
    ws.analytics.analyze(holdout=False)


def figure(html: str, element_id: str) -> str:
    """The text of the element with ``id`` (its first text node, stripped)."""
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>([^<]*)<', html)
    assert found is not None, f"no element #{element_id} in the page"
    return found.group(1).strip()
