"""The Contacts pages on a real service: search by email, id, customer id and name with
paging; a contact's profile, consent with its log, tags with history and flows equal to
``winback contacts show --json``; its timeline newest first, a page at a time."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx

from tests.conftest import T0
from tests.dashboard_support import cli_json, drive, figures, reader, within
from tests.flows.helpers import add_event, add_order, make_contacts
from tests.web_support import running_service
from winback.clock import FixedClock
from winback.contact_history import timeline
from winback.workspace import Workspace

DAY = timedelta(days=1)


def _ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-contact="(\d+)">', page)]


def test_the_contact_page_shows_what_contacts_show_does(
    workspace: Workspace, clock: FixedClock
) -> None:
    ws = workspace
    people = drive(ws, clock)
    cid = people[5]  # still in the reference flow, waiting out its last 3 days
    ws.store.set_consent(cid, "sms", False, at=T0 + 2 * DAY, source="import")
    ws.tags.add("vip", contact_refs=[f"#{cid}"], source="test")
    ws.tags.remove("vip", contact_refs=[f"#{cid}"], source="test")
    ws.tags.add("gold", contact_refs=[f"#{cid}"], source="test")
    with running_service(ws) as base:
        page = httpx.get(f"{base}/contacts/{cid}", headers=reader(ws))
    assert page.status_code == 200
    shown = figures(page.text)
    profile = cli_json(ws, "contacts", "show", f"#{cid}")
    assert shown["attributes.email"] == profile["attributes"]["email"] == "c5@example.com"
    assert int(shown["attributes.orders_count"]) == profile["attributes"]["orders_count"] == 1
    assert shown["consent.email"] == "true" and shown["consent.sms"] == "false"
    assert shown["consent.push"] == "" and profile["consent"]["push"] is None
    consent = within(page.text, 'class="consent-log"', "</table>")
    assert "sms" in consent and "refused" in consent and "import" in consent
    tags = within(page.text, 'class="plain tags"', "</ul>")
    assert [t["tag"] for t in profile["tags"]] == ["gold"]
    assert 'data-tag="gold"' in tags and 'data-tag="vip"' not in tags
    history = within(page.text, 'class="tag-history"', "</table>")
    assert history.count("<tr>") == len(profile["tag_history"]) == 3
    assert history.index("gold") < history.index("removed")  # newest first
    (flow,) = profile["flows"]
    assert shown["flows.0.step"] == flow["step"] == "s4"
    assert flow["step_name"] in page.text  # "Still dormant after a week?"
    line = within(page.text, 'data-flow="reactivation"', "</tr>")
    assert "2026-03-05 09:00" in line  # at its step since the second email's day
    # The timeline, newest first: the second email and its email_sent event, the first and
    # its event, the order before them.
    kinds = re.findall(r'<li class="(\w+)" data-kind', page.text)
    assert kinds == ["message", "event", "message", "event", "order"]
    items = within(page.text, '<ol class="timeline">', "</ol>")
    assert items.index("reactivation-2") < items.index("reactivation-1")


def test_the_timeline_is_paged_newest_first(workspace: Workspace, clock: FixedClock) -> None:
    ws = workspace
    (cid,) = make_contacts(ws, 1, at=T0 - 400 * DAY)
    for i in range(110):
        add_event(ws, cid, "page_view", at=T0 - (200 - i) * DAY, url=f"/p/{i}")
    for i in range(5):
        add_order(ws, cid, at=T0 - (150 - 20 * i) * DAY + timedelta(hours=1))
    seen: list[str] = []
    with running_service(ws) as base:
        headers = reader(ws)
        offset: int | None = 0
        while offset is not None:
            page = httpx.get(f"{base}/contacts/{cid}?offset={offset}", headers=headers).text
            rows = re.findall(r'<li class="(\w+)" data-kind="\w+" data-id="(\d+)">', page)
            times = re.findall(r'<span class="when"><time datetime="([^"]+)"', page)
            assert len(rows) == len(times) == min(50, 115 - offset)
            seen += [f"{kind}:{n}@{t}" for (kind, n), t in zip(rows, times, strict=True)]
            older = re.search(r'<a rel="next" href="/contacts/\d+\?offset=(\d+)#timeline">', page)
            offset = int(older.group(1)) if older else None
        missing = httpx.get(f"{base}/contacts/999999", headers=headers)
    assert missing.status_code == 404
    assert len(seen) == len(set(seen)) == 115
    instants = [s.split("@")[1] for s in seen]
    assert instants == sorted(instants, reverse=True)
    assert sum(s.startswith("order:") for s in seen) == 5
    with ws.engine.connect() as conn:
        assert timeline(conn, cid, offset=100, limit=50).more is False
        assert timeline(conn, cid, offset=0, limit=115).more is False
        assert timeline(conn, cid, offset=0, limit=114).more is True


def test_search_by_email_id_customer_id_and_name_with_paging(
    workspace: Workspace,
) -> None:
    ws = workspace
    people = make_contacts(ws, 60, at=T0 - DAY, first_name="Ada", last_name="Lovelace")
    others = make_contacts(ws, 3, at=T0 - DAY, prefix="z", first_name="Grace", last_name="Hopper")
    with running_service(ws) as base:
        headers = reader(ws)

        def found(query: str, **params: str) -> tuple[list[int], str]:
            page = httpx.get(f"{base}/contacts", params={"q": query, **params}, headers=headers)
            assert page.status_code == 200
            return _ids(page.text), page.text

        assert found("c17@example.com")[0] == [people[17]]
        assert found("C17@EXAMPLE")[0] == [people[17]]  # a beginning, any case
        assert found(f"#{others[1]}")[0] == [others[1]]
        assert found(str(others[2]))[0] == [others[2]]
        assert found("z0")[0] == [others[0]]  # the customer id
        assert found("grace")[0] == sorted(others, reverse=True)
        assert found("Hop")[0] == sorted(others, reverse=True)
        assert found("Grace Hop")[0] == sorted(others, reverse=True)
        assert found("Ada Hopper")[0] == []
        first, page = found("ada")
        assert first == sorted(people, reverse=True)[:50]
        after = re.search(r'rel="next" href="/contacts\?q=ada&amp;before=(\d+)"', page)
        assert after is not None and int(after.group(1)) == first[-1]
        rest, page = found("ada", before=after.group(1))
        assert rest == sorted(people, reverse=True)[50:]
        assert 'rel="next"' not in page
        everyone, _ = found("")
        assert everyone == sorted(people + others, reverse=True)[:50]
        none, page = found("nobody@nowhere")
        assert none == [] and "No contact matches" in page
