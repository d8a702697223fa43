"""The segments pages: sizes as ``winback segments list --json``, with their trend from the
daily snapshots; a segment's definition, its members paged and searched (htmx fragment or
plain page), and its CSV export, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.dashboard_support import figures, small_shop
from tests.shopdata import add_contact, add_order
from tests.web_support import new_api_key, running_service
from winback import snapshots
from winback.store.apikeys import Scope
from winback.store.schema import contacts, segment_membership, segments
from winback.workspace import Workspace

SEGMENT = "Customers"


def _ids(html: str) -> list[int]:
    return [int(v) for v in re.findall(r'data-contact="(\d+)"', html)]


def _members(ws: Workspace, name: str) -> list[int]:
    sm = segment_membership
    with ws.engine.connect() as conn:
        return list(
            conn.execute(
                select(sm.c.contact_id)
                .join(segments, segments.c.id == sm.c.segment_id)
                .where(segments.c.name == name, sm.c.exited_at.is_(None))
                .order_by(sm.c.contact_id)
            ).scalars()
        )


@pytest.mark.slow
def test_segment_list_detail_members_and_search(workspace: Workspace, tmp_path: Path) -> None:
    small_shop(workspace, tmp_path)
    listed = workspace.segments.list()
    expected = _members(workspace, SEGMENT)
    assert len(expected) > 30
    key = new_api_key(workspace, "reader", Scope.READ)
    with (
        running_service(workspace) as base,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        page = client.get("/segments")
        assert page.status_code == 200, page.text
        shown = figures(page.text)
        for i, row in enumerate(listed):
            assert shown[f"{i}.members"] == str(row["members"])
        assert "class='chart sparkline'" in page.text  # the day's counts from the snapshot
        detail = client.get(f"/segments/{SEGMENT}?limit=20")
        assert detail.status_code == 200
        assert "event: purchase" in detail.text and "occurrence: first" in detail.text
        assert figures(detail.text)["members"] == str(len(expected))
        seen, url = [], f"/segments/{SEGMENT}?limit=20"
        while url:
            html = client.get(url).text
            seen += _ids(html)
            found = re.search(r'rel="next" href="([^"]+)"', html)
            url = found.group(1).replace("&amp;", "&") if found else ""
        assert seen == expected
        # Search: an email prefix, as an htmx fragment and as a plain page.
        with workspace.engine.connect() as conn:
            email = conn.execute(
                select(contacts.c.email).where(contacts.c.id == expected[3])
            ).scalar_one()
        prefix = email[:6]
        fragment = client.get(
            f"/segments/{SEGMENT}", params={"q": prefix.upper()}, headers={"HX-Request": "true"}
        )
        assert "<html" not in fragment.text
        found_ids = _ids(fragment.text)
        assert expected[3] in found_ids and set(found_ids) <= set(expected)
        with workspace.engine.connect() as conn:
            emails = conn.execute(
                select(contacts.c.email).where(contacts.c.id.in_(found_ids))
            ).scalars()
            assert all(e.startswith(prefix) for e in emails)
        plain = client.get(f"/segments/{SEGMENT}", params={"q": prefix})
        assert "<html" in plain.text and _ids(plain.text) == found_ids
        # A broad prefix pages in email order; an exact customer id finds its member.
        letter = email[0]
        with workspace.engine.connect() as conn:
            in_order = [
                cid
                for cid, mail in conn.execute(
                    select(contacts.c.id, contacts.c.email)
                    .where(contacts.c.id.in_(expected), contacts.c.email.like(f"{letter}%"))
                    .order_by(contacts.c.email, contacts.c.id)
                )
            ]
            customer_id = conn.execute(
                select(contacts.c.customer_id).where(contacts.c.id == expected[5])
            ).scalar_one()
        paged, url = [], f"/segments/{SEGMENT}?q={letter}&limit=4"
        while url:
            html = client.get(url).text
            paged += _ids(html)
            found = re.search(r'rel="next" href="([^"]+)"', html)
            url = found.group(1).replace("&amp;", "&") if found else ""
        assert paged == in_order and len(in_order) > 4
        assert _ids(client.get(f"/segments/{SEGMENT}", params={"q": customer_id}).text) == [
            expected[5]
        ]
        assert client.get("/segments/No%20such%20segment").status_code == 404


def test_segment_export_is_the_cli_export_and_formula_safe(
    workspace: Workspace, tmp_path: Path
) -> None:
    for i, name in enumerate(('=HYPERLINK("http://x")', "+1", "Ann")):
        cid = add_contact(workspace, f"c{i}", email=f"c{i}@example.com", first_name=name)
        add_order(workspace, cid, workspace.clock.now() - timedelta(days=3))
    workspace.segments.refresh()
    key = new_api_key(workspace, "reader", Scope.READ)
    with running_service(workspace) as base:
        answer = httpx.get(
            f"{base}/segments/{SEGMENT}/export.csv", headers={"Authorization": f"Bearer {key}"}
        )
        missing = httpx.get(
            f"{base}/segments/nope/export.csv", headers={"Authorization": f"Bearer {key}"}
        )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="Customers.csv"' in answer.headers["content-disposition"]
    workspace.segments.export(SEGMENT, tmp_path / "cli.csv")
    assert answer.text.replace("\r\n", "\n") == (tmp_path / "cli.csv").read_text().replace(
        "\r\n", "\n"
    )
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    names = sorted(r["first_name"] for r in rows)
    assert names == sorted(['\'=HYPERLINK("http://x")', "'+1", "Ann"])
    assert missing.status_code == 404


def test_a_refresh_records_the_days_member_counts(workspace: Workspace) -> None:
    add_order(workspace, add_contact(workspace, "c1"), workspace.clock.now() - timedelta(days=3))
    workspace.segments.refresh()
    snap = snapshots.latest(workspace.engine, snapshots.SEGMENTS)
    assert snap is not None and snap.day == workspace.clock.now().date()
    assert snap.data["members"][SEGMENT] == 1
    base = snapshots.latest(workspace.engine, snapshots.BASE)
    assert base is not None and base.data["customers"] == 1
    assert not snapshots.base_is_due(workspace.engine, workspace.clock.now())
