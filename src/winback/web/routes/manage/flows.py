"""``/api/v1/flows``: the flows with their status and counts, one flow's stats and results,
and enabling or pausing it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from winback.results.period import BadDate, period
from winback.web.auth import ManageDep, ReadDep
from winback.web.deps import WorkspaceDep
from winback.web.routes.manage.common import BEARER, core_errors, invalid, plain, responses

router = APIRouter(prefix="/api/v1", tags=["flows"], dependencies=[BEARER])

#: How a ``since`` / ``until`` bound starts (the rest is read by
#: :func:`winback.results.period.parse_bound`).
ISO_DAY = r"^\d{4}-\d{2}-\d{2}"

FlowName = Annotated[str, Path(description="The flow's key (file name without .yaml) or name.")]


class FlowSummary(BaseModel):
    """A flow with its status and counts (as `winback flows list --json`)."""

    key: str
    name: str
    status: str = Field(description="`enabled` or `paused`.")
    version: int
    trigger: str
    active: int = Field(description="Contacts in the flow now.")
    entered: int = Field(description="Contacts that ever entered it.")


class FlowStats(BaseModel):
    """Where a flow's contacts are (as `winback flows stats --json`)."""

    flow: str
    step_names: dict[str, str]
    entered: int
    active_per_step: dict[str, int]
    exits: dict[str, int]
    messages_per_step: dict[str, dict[str, int]]
    outcomes_per_step: dict[str, dict[str, int]]
    holdout: int
    treatment: int


class FlowResults(BaseModel):
    """What a flow achieved (as `winback flows results --json`): per group, step, branch
    and variant the counts and rates with their denominators, the lift over the holdout and
    the control group with its interval, and the A/B status of each experiment."""

    flow: str
    name: str
    as_of: datetime
    since: datetime | None
    until: datetime | None
    rule: dict[str, Any]
    groups: list[dict[str, Any]]
    lift: dict[str, dict[str, Any] | None]
    steps: list[dict[str, Any]]
    branches: list[dict[str, Any]]
    variants: list[dict[str, Any]]
    experiments: list[dict[str, Any]]


class FlowChange(BaseModel):
    """A flow after `enable` or `pause`."""

    flow: FlowSummary
    changed: bool = Field(description="False when the flow already had that status.")
    backfilled: int = Field(0, description="Contacts enrolled by the flow's back-fill.")


@router.get("/flows", response_model=list[FlowSummary], responses=responses())
def list_flows(workspace: WorkspaceDep, _who: ReadDep) -> Any:
    """Every flow of the workspace with its status and how many contacts are in it."""
    with core_errors():
        return [asdict(i) for i in workspace.flows.list()]


@router.get("/flows/{name}", response_model=FlowStats, responses=responses(404))
def flow_stats(name: FlowName, workspace: WorkspaceDep, _who: ReadDep) -> Any:
    """Contacts per step, exits by reason, messages per step, holdout and treatment."""
    with core_errors():
        workspace.flows.sync()
        return plain(workspace.flows.stats(name))


@router.get("/flows/{name}/results", response_model=FlowResults, responses=responses(404))
def flow_results(
    name: FlowName,
    workspace: WorkspaceDep,
    _who: ReadDep,
    since: Annotated[
        str | None,
        Query(
            max_length=40,
            pattern=ISO_DAY,
            description="Only entries from this ISO date or date-time.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            max_length=40,
            pattern=ISO_DAY,
            description="Only entries up to this ISO date (included) or date-time.",
        ),
    ] = None,
) -> Any:
    """What the flow achieved, for the entries of the period (a date without an offset is
    read in the shop's time zone)."""
    from winback.results.report import flow_results as compute
    from winback.results.snapshot import results_of

    try:
        begin, end = period(since, until, workspace.settings.timezone)
    except BadDate as exc:
        raise invalid("query", str(exc).split(" ", 1)[0], str(exc)) from None
    with core_errors():
        workspace.flows.sync()
        if begin is None and end is None:  # the whole flow: its kept results when current
            return plain(results_of(workspace, name)[0])
        return plain(compute(workspace, name, since=begin, until=end).to_dict())


@router.post("/flows/{name}/enable", response_model=FlowChange, responses=responses(404))
def enable_flow(name: FlowName, workspace: WorkspaceDep, _who: ManageDep) -> FlowChange:
    """Start or resume the flow (with the back-fill its file asks for, the first time).
    Enabling an enabled flow changes nothing."""
    with core_errors():
        was = workspace.flows.info(name)
        filled = workspace.flows.enable(name)
        now = workspace.flows.info(name)
    return FlowChange(
        flow=FlowSummary(**asdict(now)), changed=was.status != now.status, backfilled=filled
    )


@router.post("/flows/{name}/pause", response_model=FlowChange, responses=responses(404))
def pause_flow(name: FlowName, workspace: WorkspaceDep, _who: ManageDep) -> FlowChange:
    """Pause the flow: no step advances and no one enters until it is enabled again.
    Pausing a paused flow changes nothing."""
    with core_errors():
        was = workspace.flows.info(name)
        if was.status != "paused":
            workspace.flows.pause(name)
        now = workspace.flows.info(name)
    return FlowChange(flow=FlowSummary(**asdict(now)), changed=was.status != now.status)
