"""The HTTP API's OpenAPI schema is valid and the API honours it: schemathesis generates
requests from the schema (a bounded number per operation) against the real app."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.result import Ok

from tests.conftest import T0
from tests.test_segments import crafted_shop
from tests.web_support import new_api_key
from winback.store.apikeys import Scope
from winback.web.app import create_app
from winback.workspace import Workspace

#: Operations whose schema-valid requests business rules may still refuse with their
#: documented 400 or 422 (an event dated more than a day after the server's clock, a time
#: with no UTC equivalent, a time before 1970, an email address or time zone a contacts
#: import refuses): every other check holds for them, a 5xx above all.
RULED = {
    "POST /api/v1/events",
    "POST /api/v1/events/batch",
    "POST /api/v1/feedback-reports",
    "GET /api/v1/flows/{name}/results",  # since / until: a day that does not exist
    "PUT /api/v1/contacts/{contact}",  # fields checked as a contacts import checks them
}


#: The management API's operations (:mod:`winback.web.routes.manage`).
MANAGEMENT = sorted(
    [
        "GET /api/v1/segments",
        "GET /api/v1/segments/{name}",
        "GET /api/v1/segments/{name}/members",
        "GET /api/v1/flows",
        "GET /api/v1/flows/{name}",
        "GET /api/v1/flows/{name}/results",
        "POST /api/v1/flows/{name}/enable",
        "POST /api/v1/flows/{name}/pause",
        "GET /api/v1/contacts/{contact}",
        "PUT /api/v1/contacts/{contact}",
        "DELETE /api/v1/contacts/{contact}",
        "POST /api/v1/contacts/{contact}/consent",
        "GET /api/v1/contacts/{contact}/tags",
        "PUT /api/v1/contacts/{contact}/tags/{tag}",
        "DELETE /api/v1/contacts/{contact}/tags/{tag}",
        "GET /api/v1/tags",
    ]
)


def refusable(label: str) -> list[Any]:
    return [positive_data_acceptance] if label in RULED else []


@pytest.mark.slow
def test_api_conforms_to_its_schema(sqlite_workspace: Workspace) -> None:
    # A shop with refreshed segments, a flow that ran and a tag: the list operations answer
    # with rows, which are checked against their schema too.
    crafted_shop(sqlite_workspace)
    sqlite_workspace.segments.refresh(T0)
    sqlite_workspace.flows.add("reactivation", enable=True, now=T0)
    sqlite_workspace.flows.tick(T0)
    app = create_app(sqlite_workspace)
    events = {"Authorization": f"Bearer {new_api_key(sqlite_workspace, 'st')}"}
    manage = {"Authorization": f"Bearer {new_api_key(sqlite_workspace, 'sm', Scope.MANAGE)}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=manage)
    tested = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        tested.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case[Any]) -> None:
            label = case.operation.label
            headers = events if "/events" in label or "/feedback-reports" in label else manage
            case.call_and_validate(headers=headers, excluded_checks=refusable(label))

        check()
    assert sorted(tested) == sorted(
        [
            "GET /healthz",
            "POST /api/v1/events",
            "POST /api/v1/events/batch",
            "POST /api/v1/feedback-reports",
            "POST /api/v1/feedback-reports/raw",
            "POST /webhooks/shopify",
            "POST /webhooks/woocommerce",
            *MANAGEMENT,
        ]
    )


def test_schema_lists_the_api_and_hides_link_routes(sqlite_workspace: Workspace) -> None:
    doc = create_app(sqlite_workspace).openapi()
    assert set(doc["paths"]) == {
        "/healthz",
        "/api/v1/events",
        "/api/v1/events/batch",
        "/api/v1/feedback-reports",
        "/api/v1/feedback-reports/raw",
        "/webhooks/shopify",
        "/webhooks/woocommerce",
        *{label.split(" ")[1] for label in MANAGEMENT},
    }
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_management_operations_document_their_errors(sqlite_workspace: Workspace) -> None:
    doc = create_app(sqlite_workspace).openapi()
    for label in MANAGEMENT:
        method, path = label.split(" ")
        operation = doc["paths"][path][method.lower()]
        answers = operation["responses"]
        assert {"400", "401", "403", "503"} <= set(answers), label
        assert "Retry-After" in answers["503"]["headers"], label
        assert operation["security"] == [{"HTTPBearer": []}], label
        if "{" in path:
            assert "422" in answers, label
            # PUT on a contact creates it: no 404.
            assert ("404" in answers) is (label != "PUT /api/v1/contacts/{contact}"), label
        assert "$ref" in str(answers["200"]["content"]["application/json"]["schema"]), label
    put = doc["paths"]["/api/v1/contacts/{contact}"]["put"]["responses"]
    assert {"201", "409"} <= set(put)
    members = doc["paths"]["/api/v1/segments/{name}/members"]["get"]["parameters"]
    limit = next(p for p in members if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 1000)
