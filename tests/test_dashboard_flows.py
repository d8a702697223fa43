"""The Flows pages on a real service: the list, the flow drawn as a diagram with the
contacts at every step and branch after the reference flow ran, its results and statistics
equal to the CLI's, and enable / pause."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.dashboard_support import cli_json, csrf_field, drive, figures, reader, session, within
from tests.web_support import running_service
from winback.clock import FixedClock
from winback.flows.program import load_program
from winback.store.apikeys import Scope
from winback.workspace import Workspace

SVG = "http://www.w3.org/2000/svg"

#: A flow with every kind of fork: a holdout, an A/B split, a wait_for with both branches.
FORKS = """\
name: Forks
trigger: {segment_entry: Customers Not Active}
entry: {consent: email}
steps:
  - {name: Hold out, holdout: {share: 0.3}}
  - name: Subject test
    split:
      branches:
        - {name: A, weight: 1, steps: [{name: Email A, send: {channel: email, template: reactivation-1}}]}
        - {name: B, weight: 1, steps: [{name: Email B, send: {channel: email, template: reactivation-2}}]}
  - name: Clicked?
    wait_for: {event: email_clicked, timeout: 3d}
    then: [{name: Thanks, add_tag: clicked}]
    else: [{name: Gave up, exit: no_click}]
"""


def _boxes(svg: str) -> dict[str, dict[str, str]]:
    root = ET.fromstring(svg)
    return {
        g.attrib["data-step"]: g.attrib for g in root.iter(f"{{{SVG}}}g") if "data-step" in g.attrib
    }


def _edges(svg: str) -> dict[tuple[str, str], int]:
    root = ET.fromstring(svg)
    return {
        (g.attrib["data-source"], g.attrib["data-outcome"]): int(g.attrib["data-count"])
        for g in root.iter(f"{{{SVG}}}g")
        if "data-outcome" in g.attrib
    }


def _svg(page: str) -> str:
    return within(page, "<svg", "</svg>") + "</svg>"


def test_the_diagram_shows_every_step_with_its_contacts(
    workspace: Workspace, clock: FixedClock
) -> None:
    ws = workspace
    drive(ws, clock)
    headers = reader(ws)
    with running_service(ws) as base:
        page = httpx.get(f"{base}/flows/reactivation", headers=headers)
    assert page.status_code == 200
    svg = _svg(page.text)
    boxes = _boxes(svg)
    program = load_program(ws.path / "flows" / "reactivation.yaml")
    # One box per step of the flow, plus its start and its finish.
    assert set(boxes) == {*program.nodes, "start", "finish"}
    assert boxes["start"]["data-entered"] == "10"
    assert boxes["s0"]["data-passed"] == "10"  # Email 1
    assert boxes["s2"]["data-passed"] == "10"  # Still dormant?
    assert boxes["s2.then.0"]["data-passed"] == "7"  # Email 2
    assert boxes["s2.else.0"]["data-passed"] == "3"  # Exit: reactivated
    # The seven still dormant wait out the 3 days (parked at s4 until day 11).
    assert boxes["s3"]["data-waiting"] == "7"
    assert boxes["s4"]["data-passed"] == "0" and boxes["s4"]["data-here"] == "0"
    assert _edges(svg) == {
        ("s2", "then"): 7,
        ("s2", "else"): 3,
        ("s4", "then"): 0,
        ("s4", "else"): 0,
    }
    # The step names are on the boxes.
    assert ">Still dormant after a week?<" in svg and ">Tag: not reactivated<" in svg


def test_forks_are_drawn_with_their_branches(
    sqlite_workspace: Workspace, clock: FixedClock
) -> None:
    ws = sqlite_workspace
    drive(ws, clock, forks=FORKS)
    with running_service(ws) as base:
        page = httpx.get(f"{base}/flows/forks", headers=reader(ws))
    assert page.status_code == 200
    svg = _svg(page.text)
    edges = _edges(svg)
    boxes = _boxes(svg)
    held, treated = edges[("s0", "holdout")], edges[("s0", "treatment")]
    a, b = edges[("s1", "branch:A")], edges[("s1", "branch:B")]
    assert held + treated == 10 and held > 0 and treated > 0
    assert a + b == 10  # the holdout goes through the split too, without a message
    assert boxes["s1.A.0"]["data-passed"] == str(a) and boxes["s1.B.0"]["data-passed"] == str(b)
    # No one clicked: all wait for the click until day 3, then leave through "Gave up".
    assert boxes["s2"]["data-kind"] == "wait_for"
    assert edges[("s2", "timeout")] == int(boxes["s2.else.0"]["data-passed"]) == 10
    assert edges[("s2", "event")] == 0
    stats = cli_json(ws, "flows", "stats", "forks")
    assert stats["holdout"] == held and stats["treatment"] == treated


@pytest.mark.slow
def test_results_and_statistics_equal_the_cli(workspace: Workspace, clock: FixedClock) -> None:
    ws = workspace
    drive(ws, clock)
    headers = reader(ws)
    with running_service(ws) as base:
        page = httpx.get(f"{base}/flows/reactivation", headers=headers).text
        section = httpx.get(
            f"{base}/flows/reactivation/results", headers={**headers, "HX-Request": "true"}
        ).text
        alone = httpx.get(f"{base}/flows/reactivation/results", headers=headers).text
        where = httpx.get(
            f"{base}/flows/reactivation/stats", headers={**headers, "HX-Request": "true"}
        ).text
        where_alone = httpx.get(f"{base}/flows/reactivation/stats", headers=headers).text
    # The flow page asks for its results and statistics once shown; they are the same alone
    # or as a section.
    assert 'hx-get="/flows/reactivation/results" hx-trigger="load"' in page
    assert 'hx-get="/flows/reactivation/stats" hx-trigger="load"' in page
    assert section.lstrip().startswith('<section class="card" id="results">')
    assert where.lstrip().startswith('<section class="card" id="stats">')
    assert section.strip() in alone and where.strip() in where_alone
    shown = {**figures(page), **figures(section), **figures(where)}
    results = cli_json(ws, "flows", "results", "reactivation")
    stats = cli_json(ws, "flows", "stats", "reactivation")
    compared = 0
    for group in results["groups"]:
        for key in ("contacts", "converted", "reactivated", "orders", "revenue"):
            assert float(shown[f"results.groups.{group['group']}.{key}"]) == group[key]
            compared += 1
    treatment = results["groups"][0]
    assert treatment["group"] == "treatment" and treatment["reactivated"] == 3
    assert treatment["revenue"] == 240.0
    for i, step in enumerate(results["steps"]):
        for key in ("sent", "delivered", "opened", "clicked", "bounced", "orders", "revenue"):
            assert float(shown[f"results.steps.{i}.{key}"]) == step[key]
            compared += 1
    assert [s["delivered"] for s in results["steps"]] == [10, 7]
    assert int(figures(page)["stats.entered"]) == stats["entered"] == 10
    assert int(figures(where)["stats.entered"]) == stats["entered"]
    for reason, n in stats["exits"].items():
        assert int(shown[f"stats.exits.{reason}"]) == n
    for step, n in stats["active_per_step"].items():
        assert int(shown[f"stats.active_per_step.{step}"]) == n
    assert compared == 3 * 5 + 2 * 7


@pytest.mark.slow
def test_lift_and_ab_status_equal_the_cli(sqlite_workspace: Workspace, clock: FixedClock) -> None:
    ws = sqlite_workspace
    drive(ws, clock, forks=FORKS)
    with running_service(ws) as base:
        page = httpx.get(f"{base}/flows/forks/results", headers=reader(ws)).text
    shown = figures(page)
    results = cli_json(ws, "flows", "results", "forks")
    lift = results["lift"]["holdout"]
    assert lift is not None
    for metric in ("conversion", "revenue_per_contact"):
        assert float(shown[f"results.lift.holdout.{metric}.difference"]) == pytest.approx(
            lift[metric]["difference"]
        )
        assert shown[f"results.lift.holdout.{metric}.verdict"] == lift[metric]["verdict"]
    assert [e["status"] for e in results["experiments"]] == [
        shown[f"results.experiments.{i}.status"] for i in range(len(results["experiments"]))
    ]
    assert results["experiments"][0]["status"] == "no winner yet"


def test_the_list_shows_each_flow_with_the_cli_figures(
    workspace: Workspace, clock: FixedClock
) -> None:
    ws = workspace
    drive(ws, clock)
    ws.flows.pause("reactivation-companion")
    headers = reader(ws)
    with running_service(ws) as base:
        first = httpx.get(f"{base}/flows", headers=headers).text
        table = httpx.get(f"{base}/flows?figures=1", headers={**headers, "HX-Request": "true"})
        page = httpx.get(f"{base}/flows?figures=1", headers=headers).text
    # The page comes at once, then htmx asks for the table with delivered and reactivated.
    assert 'hx-get="/flows?figures=1" hx-trigger="load"' in first
    assert 'data-figure="delivered"' not in first and 'data-figure="entered"' in first
    assert table.text.lstrip().startswith('<div id="flows-table">') and "<html" not in table.text
    assert table.text.strip() in page
    listed = cli_json(ws, "flows", "list")
    results = cli_json(ws, "flows", "results", "reactivation")
    rows = {
        key: figures(within(page, f'<tr data-flow="{key}">', "</tr>"))
        for key in (f["key"] for f in listed)
    }
    for flow in listed:
        row = rows[flow["key"]]
        assert row["status"] == flow["status"]
        assert int(row["entered"]) == flow["entered"] and int(row["active"]) == flow["active"]
    assert rows["reactivation-companion"]["status"] == "paused"
    assert rows["reactivation"]["status"] == "enabled"
    assert int(rows["reactivation"]["delivered"]) == sum(s["delivered"] for s in results["steps"])
    assert int(rows["reactivation"]["reactivated"]) == results["groups"][0]["reactivated"] == 3
    assert '<a href="/flows/reactivation">Dormant customer reactivation</a>' in page


def _status(page: str) -> str:
    found = re.search(r'data-figure="status">(\w+)<', page)
    assert found is not None
    return found.group(1)


def test_pause_then_enable_changes_the_status(workspace: Workspace, clock: FixedClock) -> None:
    ws = workspace
    drive(ws, clock)
    headers = reader(ws, Scope.MANAGE)
    with running_service(ws) as base:
        page = httpx.get(f"{base}/flows/reactivation", headers=headers).text
        assert _status(page) == "enabled"
        token = csrf_field(within(page, 'id="flow-status"', "</div>")) or ""
        paused = httpx.post(
            f"{base}/flows/reactivation/pause", data={"csrf_token": token}, headers=headers
        )
        assert paused.status_code == 303 and paused.headers["location"] == "/flows/reactivation"
        assert cli_json(ws, "flows", "list")[0]["status"] == "paused"
        assert _status(httpx.get(f"{base}/flows/reactivation", headers=headers).text) == "paused"
        # htmx swaps the status block in place.
        enabled = httpx.post(
            f"{base}/flows/reactivation/enable",
            data={"csrf_token": token},
            headers={**headers, "HX-Request": "true"},
        )
        assert enabled.status_code == 200
        assert enabled.text.lstrip().startswith('<div id="flow-status"')
        assert _status(enabled.text) == "enabled" and "/flows/reactivation/pause" in enabled.text
        missing = httpx.post(f"{base}/flows/nothing/pause", headers=headers)
        for part in ("", "/stats", "/results"):
            assert httpx.get(f"{base}/flows/nothing{part}", headers=headers).status_code == 404
        looker = httpx.post(f"{base}/flows/reactivation/pause", headers=reader(ws))
    assert missing.status_code == 404
    assert looker.status_code == 403  # a read key looks, it does not pause
    assert {f["key"]: f["status"] for f in cli_json(ws, "flows", "list")}["reactivation"] == (
        "enabled"
    )


def test_a_signed_in_post_without_the_csrf_token_is_refused(
    sqlite_workspace: Workspace, clock: FixedClock
) -> None:
    ws = sqlite_workspace
    drive(ws, clock)
    with running_service(ws) as base:
        with session(ws, base) as client:
            page = client.get("/flows/reactivation").text
            refused = client.post("/flows/reactivation/pause", follow_redirects=False)
            assert refused.status_code == 403
            assert _status(client.get("/flows/reactivation").text) == "enabled"
            token = csrf_field(page)
            done = client.post(
                "/flows/reactivation/pause", data={"csrf_token": token}, follow_redirects=False
            )
            assert done.status_code == 303
            assert _status(client.get("/flows/reactivation").text) == "paused"


def test_an_anonymous_request_is_refused(sqlite_workspace: Workspace) -> None:
    with running_service(sqlite_workspace) as base:
        page = httpx.get(f"{base}/flows/reactivation", follow_redirects=False)
        post = httpx.post(f"{base}/flows/reactivation/pause", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert post.status_code in (303, 401, 403)
    assert sqlite_workspace.flows.list() == []
