"""The RFM page: the grid and the segments of ``winback analyze --json``; a cell or a
segment opens its customers, paged by contact id."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.dashboard_support import figures, small_shop
from tests.web_support import new_api_key, running_service
from winback.store.apikeys import Scope
from winback.store.schema import contacts
from winback.workspace import Workspace


def _member_ids(html: str) -> list[int]:
    return [int(v) for v in re.findall(r'data-contact="(\d+)"', html)]


def _all_pages(client: httpx.Client, first: str) -> list[int]:
    """Contact ids over every page, following the Next links."""
    ids: list[int] = []
    url: str | None = first
    while url is not None:
        html = client.get(url).text
        ids += _member_ids(html)
        found = re.search(r'rel="next" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    return ids


@pytest.mark.slow
def test_rfm_grid_segments_and_members(workspace: Workspace, tmp_path: Path) -> None:
    small_shop(workspace, tmp_path, customers=400)
    report = workspace.analytics.analyze(holdout=False).report
    grid, segs = report["rfm"]["grid"], report["rfm"]["segments"]
    key = new_api_key(workspace, "reader", Scope.READ)
    with (
        running_service(workspace) as base,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        page = client.get("/rfm")
        assert page.status_code == 200, page.text
        shown = figures(page.text)
        for r in range(1, 6):
            for f in range(1, 6):
                assert shown[f"rfm.grid.counts.{r - 1}.{f - 1}"] == str(
                    grid["counts"][r - 1][f - 1]
                )
                revenue = float(shown[f"rfm.grid.revenue.{r - 1}.{f - 1}"])
                assert revenue == grid["revenue"][r - 1][f - 1]
        for i, s in enumerate(segs):
            assert shown[f"rfm.segments.{i}.customers"] == str(s["customers"])
            assert float(shown[f"rfm.segments.{i}.revenue"]) == s["revenue"]
        assert "Can&#39;t Lose Them" in page.text
        # The fullest cell opens its customers: exactly the contacts analysed into it.
        r, f = max(
            ((r, f) for r in range(1, 6) for f in range(1, 6)),
            key=lambda rf: grid["counts"][rf[0] - 1][rf[1] - 1],
        )
        with workspace.engine.connect() as conn:
            expected = list(
                conn.execute(
                    select(contacts.c.id)
                    .where(contacts.c.rfm_r == r, contacts.c.rfm_f == f)
                    .order_by(contacts.c.id)
                ).scalars()
            )
        assert len(expected) == grid["counts"][r - 1][f - 1] > 20  # more than one page
        members = client.get(f"/rfm/members?r={r}&f={f}")
        assert f"{len(expected):,} members" in members.text
        assert _member_ids(members.text) == expected[:50]
        assert _all_pages(client, f"/rfm/members?r={r}&f={f}&limit=10") == expected
        # Back from the second page.
        second = client.get(f"/rfm/members?r={r}&f={f}&limit=10&after={expected[9]}")
        previous = re.search(r'rel="prev" href="([^"]+)"', second.text)
        assert previous is not None
        back = client.get(previous.group(1).replace("&amp;", "&"))
        assert _member_ids(back.text) == expected[:10]
        # A segment opens its customers too.
        biggest = max(segs, key=lambda s: s["customers"])
        with workspace.engine.connect() as conn:
            in_segment = list(
                conn.execute(
                    select(contacts.c.id)
                    .where(contacts.c.rfm_segment == biggest["segment"])
                    .order_by(contacts.c.id)
                ).scalars()
            )
        assert len(in_segment) == biggest["customers"]
        assert (
            _all_pages(client, f"/rfm/members?segment={biggest['segment']}&limit=25") == in_segment
        )
        # An htmx request gets the list alone.
        fragment = client.get(f"/rfm/members?r={r}&f={f}", headers={"HX-Request": "true"})
        assert "<html" not in fragment.text and _member_ids(fragment.text) == expected[:50]
        assert client.get("/rfm/members?r=6&f=1").status_code == 422
        assert client.get("/rfm/members?r=1").status_code == 422


def test_rfm_without_an_analysis_says_so(sqlite_workspace: Workspace) -> None:
    key = new_api_key(sqlite_workspace, "reader", Scope.READ)
    with running_service(sqlite_workspace) as base:
        page = httpx.get(f"{base}/rfm", headers={"Authorization": f"Bearer {key}"})
    assert page.status_code == 200
    assert "No analysis yet" in page.text
