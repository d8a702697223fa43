"""``Workspace.flows``: flow files, their state in the store, ticks and inspection.

Flow files live in ``<workspace>/flows/*.yaml``; the file stem is the flow's key. Each tick
first *syncs* the files into the ``flows`` table (a changed definition gets a new version;
entries parked at a step id that no longer exists exit with reason ``flow_changed``), then
refreshes segments, enrols and advances, until nothing more is due at that instant. Every
write of a tick is a slice of about ``write_slice_ms`` (:mod:`winback.store.slices`), and a
tick asked to stop returns between two slices: the next tick carries on from there.
"""

from __future__ import annotations

import builtins
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, func, select, text, update

from winback.clock import Clock
from winback.config import Settings
from winback.errors import DefinitionError, NotFound
from winback.flows import models as m
from winback.flows.backfill import backfill as run_backfill
from winback.flows.conditions import validate as validate_condition
from winback.flows.engine import RunningFlow, StepRunner, TickReport
from winback.flows.labels import step_label, step_labels
from winback.flows.program import Program, compile_program, load_program, parse_definition
from winback.flows.triggers import enroll, source_max_id
from winback.ports import SegmentRefresh
from winback.results import control
from winback.results.winners import auto_splits, declared_winners
from winback.sectors import SECTORS
from winback.store.schema import flow_entries, flow_step_counts, flows, outbox
from winback.store.slices import Pacer

#: Seconds a tick leaves the store to other writers after each write slice (see
#: :mod:`winback.store.slices`).
SLICE_GAP = 0.002

MAX_ROUNDS = 100
#: Enrolments of at least this many entries refresh PostgreSQL's statistics.
ANALYZE_AFTER = 10_000


@dataclass
class FlowInfo:
    key: str
    name: str
    status: str
    version: int
    trigger: str
    active: int
    entered: int


def library_root() -> Path:
    return Path(str(resources.files("winback.flows") / "library"))


def delivery_library() -> Path | None:
    """The delivery feature's shipped message templates, when it is installed."""
    try:
        folder = Path(str(resources.files("winback.delivery.messages") / "library"))
    except ModuleNotFoundError:
        return None
    return folder if folder.is_dir() else None


def library_templates() -> list[str]:
    return sorted(p.name for p in library_root().iterdir() if (p / "flow.yaml").is_file())


class Flows:
    """The flows of one workspace: the flow files under ``<home>/flows``, their state in
    the store behind ``engine``, and ticks. ``segments`` (when given) is refreshed at the
    start of each tick; ``batch_size`` overrides ``settings.flow_batch_size``."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        home: Path,
        *,
        segments: SegmentRefresh | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.engine = engine
        self.home = home
        self.settings = settings
        self.clock = clock
        self.segments = segments
        #: Declared A/B winners per flow and definition (see :meth:`_winners`).
        self._declared: dict[tuple[int, str], dict[str, str]] = {}
        self.runner = StepRunner(
            engine,
            default_timezone=settings.timezone,
            batch_size=batch_size or settings.flow_batch_size,
            pacer=Pacer(settings.write_slice_ms, gap=SLICE_GAP),
        )

    @property
    def folder(self) -> Path:
        return self.home / "flows"

    # -- files ------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.yaml")) if self.folder.is_dir() else []

    def validate_file(self, file: Path) -> Program:
        """Load a flow file and check everything, conditions included."""
        try:
            shown = str(file.resolve().relative_to(self.home))
        except ValueError:
            shown = str(file)
        program = load_program(file, display=shown)
        check_conditions(program, shown)
        return program

    def load_files(self, errors: builtins.list[str] | None = None) -> dict[str, Program]:
        """Every flow file, validated. With ``errors`` given, an invalid file is reported
        there and left out (its stored version keeps running) instead of raising."""
        programs = {}
        for file in self.files():
            try:
                program = self.validate_file(file)
            except DefinitionError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                continue
            programs[program.key] = program
        return programs

    # -- store ------------------------------------------------------------------------------
    def sync(
        self, now: datetime | None = None, *, errors: builtins.list[str] | None = None
    ) -> dict[str, str]:
        """Bring the ``flows`` table in line with the files; returns what changed per key.
        With ``errors`` given, invalid files are reported there and skipped."""
        now = now or self.clock.now()
        programs = self.load_files(errors)
        changes: dict[str, str] = {}
        with self.engine.begin() as conn:
            rows = {r.key: r for r in conn.execute(select(flows))}
            for key, program in programs.items():
                definition = dump(program.definition)
                row = rows.get(key)
                if row is None:
                    conn.execute(
                        flows.insert().values(
                            key=key,
                            name=program.name,
                            definition=definition,
                            version=1,
                            status="paused",
                            updated_at=now,
                        )
                    )
                    changes[key] = "added"
                elif row.definition != definition:
                    conn.execute(
                        update(flows)
                        .where(flows.c.id == row.id)
                        .values(
                            name=program.name,
                            definition=definition,
                            version=row.version + 1,
                            updated_at=now,
                        )
                    )
                    gone = conn.execute(
                        update(flow_entries)
                        .where(
                            flow_entries.c.flow_id == row.id,
                            flow_entries.c.status == "active",
                            flow_entries.c.step.not_in(list(program.nodes)),
                        )
                        .values(
                            status="exited",
                            exit_reason="flow_changed",
                            exited_at=now,
                            wake_at=None,
                        )
                    ).rowcount
                    changes[key] = f"version {row.version + 1} ({gone} exited: flow_changed)"
        return changes

    def _row(self, key: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(flows).where((flows.c.key == key) | (flows.c.name == key))
            ).first()
        if row is None:
            known = ", ".join(p.stem for p in self.files()) or "none"
            raise NotFound(f"no flow {key!r} (flows in this workspace: {known})")
        return row

    def enable(
        self,
        key: str,
        *,
        now: datetime | None = None,
        backfill: timedelta | None = None,
        late_by: timedelta | None = None,
    ) -> int:
        """Start (or resume) a flow. Triggers look only at what happens from now on, except
        that a segment-entry flow enabled for the first time with ``include_existing`` also
        enrols the segment's current members, and that an event or tag flow with a
        ``backfill`` window (the argument, else the flow file's ``entry.backfill``) enrols
        the contacts of that look-back (:mod:`winback.flows.backfill`) in the same
        transaction. Returns how many were back-filled (0 when it was enabled already)."""
        now = now or self.clock.now()
        self.sync(now)
        row = self._row(key)
        program = compile_program(row.key, parse_definition(row.definition, path=row.key))
        trigger = program.definition.trigger
        with self.engine.begin() as conn:
            wm_id = source_max_id(conn, trigger)
            if row.enabled_at is None and isinstance(trigger, m.SegmentEntryTrigger):
                wm_id = None if trigger.include_existing else (wm_id or 0)
            elif wm_id is None and not isinstance(trigger, m.ScheduleTrigger):
                wm_id = 0
            # The row is locked until the back-fill commits: a second enable waits for it and
            # then finds the flow enabled.
            status = conn.execute(
                select(flows.c.status).where(flows.c.id == row.id).with_for_update()
            ).scalar()
            if status == "enabled":
                return 0
            window = backfill if backfill is not None else program.definition.entry.backfill
            filled = 0
            if window:
                filled = run_backfill(conn, row.id, program, now, window, late_by)
            conn.execute(
                update(flows)
                .where(flows.c.id == row.id)
                .values(
                    status="enabled",
                    enabled_at=row.enabled_at or now,
                    watermark_id=wm_id,
                    watermark_at=now,
                    updated_at=now,
                )
            )
        return filled

    def pause(self, key: str, *, now: datetime | None = None) -> None:
        """Stop a flow: no steps advance and triggers enrol no one until it is enabled."""
        now = now or self.clock.now()
        row = self._row(key)
        with self.engine.begin() as conn:
            conn.execute(
                update(flows).where(flows.c.id == row.id).values(status="paused", updated_at=now)
            )

    def add(self, template: str, *, enable: bool = True, now: datetime | None = None) -> list[str]:
        """Copy a shipped flow (and its message templates) into the workspace; enable it.
        Returns the keys of the flows added (a template may bring a companion flow)."""
        source = library_root() / template
        if not (source / "flow.yaml").is_file():
            raise NotFound(
                f"no flow template {template!r} (shipped: {', '.join(library_templates())})"
            )
        self.folder.mkdir(exist_ok=True)
        keys = []
        files = sorted(source.glob("*.yaml"), key=lambda f: (f.name != "flow.yaml", f.name))
        for file in files:
            key = template if file.name == "flow.yaml" else f"{template}-{file.stem}"
            target = self.folder / f"{key}.yaml"
            if target.exists():
                raise DefinitionError(
                    f"{target.relative_to(self.home)} exists already; remove it or edit it"
                )
            keys.append(key)
        messages = self.home / "templates"
        messages.mkdir(exist_ok=True)
        styled = delivery_library()
        for file in sorted((source / "templates").glob("*")):
            if not (messages / file.name).exists():
                # The delivery library's styled version of the same message when it has one.
                chosen = styled / file.name if styled and (styled / file.name).is_file() else file
                shutil.copyfile(chosen, messages / file.name)
        for file, key in zip(files, keys, strict=True):
            shutil.copyfile(file, self.folder / f"{key}.yaml")
        self.sync(now)
        if enable:
            for key in keys:
                self.enable(key, now=now)
        return keys

    # -- running ----------------------------------------------------------------------------
    def running(self) -> list[RunningFlow]:
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(select(flows).where(flows.c.status == "enabled").order_by(flows.c.id))
            )
        return [
            RunningFlow(
                id=r.id,
                program=compile_program(r.key, parse_definition(r.definition, path=r.key)),
                watermark_id=r.watermark_id,
                watermark_at=r.watermark_at,
            )
            for r in rows
        ]

    def tick(
        self,
        now: datetime | None = None,
        *,
        sync: bool = True,
        refresh: bool = True,
        stop: threading.Event | None = None,
    ) -> TickReport:
        """Process everything due up to ``now``: segments, triggers, steps, repeated until
        nothing more is due at ``now``. Running it twice for one instant does nothing more.
        ``refresh=False`` skips the segment refresh (when the caller maintains membership).
        When ``stop`` is set the tick returns after the write slice in progress has
        committed (``report.stopped``); the next tick resumes from there."""
        now = now or self.clock.now()
        report = TickReport()
        if sync:
            # A bad edit must not stop `winback run`: the stored version keeps running.
            self.sync(now, errors=report.errors)
        if refresh:
            if self.segments is not None:
                self.segments.refresh(now, stop=stop, log=report.writes)
        control.refresh(self.engine, self.settings)
        running = self.running()
        for flow in running:
            flow.winners = self._winners(flow, now)
        runner = self.runner
        # One connection for the tick (see StepRunner.session).
        with runner.session(), runner.pass_of(report.writes, stop):
            for round_ in range(1, MAX_ROUNDS + 1):
                moved = 0
                for flow in running:
                    if runner.stopping:
                        break
                    moved += self._enroll(flow, now, report)
                moved += runner.advance(running, now, report)
                report.rounds = round_
                if not moved or runner.stopping:
                    break
        report.stopped = stop is not None and stop.is_set()
        return report

    def _winners(self, flow: RunningFlow, now: datetime) -> dict[str, str]:
        """The declared winners of the flow's ``winner: auto`` splits (kept once declared:
        a decision stands)."""
        if not auto_splits(flow.program):
            return {}
        key = (flow.id, flow.program.definition.model_dump_json())
        known = self._declared.get(key, {})
        if len(known) < len(auto_splits(flow.program)):
            known = declared_winners(self.engine, self.settings, flow.program, flow.id, now)
            self._declared[key] = known
        return known

    def _enroll(self, flow: RunningFlow, now: datetime, report: TickReport) -> int:
        """Enrol the flow's new candidates in write slices; returns how many entered."""
        runner, tz = self.runner, self.settings.timezone
        sector = SECTORS.get(self.settings.sector or "")
        repurchase = sector.repurchase_days if sector is not None else None
        start = runner.start_plan(flow, now)
        key = ("enrol", flow.id)
        entered = 0
        while not runner.stopping:
            window = runner.pacer.rows(key)
            with runner.pacer.slice(key, window, runner.log) as piece:
                with runner.transaction() as conn:
                    done = enroll(
                        conn,
                        flow,
                        now,
                        default_timezone=tz,
                        start=start,
                        window=window,
                        repurchase_days=repurchase,
                    )
                piece.rows = done.span
            entered += done.entered
            if done.done:
                break
        if entered >= ANALYZE_AFTER and self.engine.dialect.name == "postgresql":
            # Fresh planner statistics after a large enrolment: without them PostgreSQL
            # plans the step statements for a near-empty table.
            with runner.transaction() as conn:
                conn.execute(text("ANALYZE flow_entries"))
        if entered:
            name = flow.program.key
            report.enrolled[name] = report.enrolled.get(name, 0) + entered
            if start is not None:  # they also took the first step
                step = f"{name}:{start.node.id}"
                report.steps[step] = report.steps.get(step, 0) + entered
        return entered

    # -- inspection -------------------------------------------------------------------------
    def list(self) -> builtins.list[FlowInfo]:
        self.sync()
        fe = flow_entries
        with self.engine.connect() as conn:
            counts = {
                (fid, status): n
                for fid, status, n in conn.execute(
                    select(fe.c.flow_id, fe.c.status, func.count()).group_by(
                        fe.c.flow_id, fe.c.status
                    )
                )
            }
            rows = list(conn.execute(select(flows).order_by(flows.c.key)))
        out = []
        for r in rows:
            trig = next(iter(r.definition["trigger"]))
            out.append(
                FlowInfo(
                    key=r.key,
                    name=r.name,
                    status=r.status,
                    version=r.version,
                    trigger=f"{trig}: {r.definition['trigger'][trig]}",
                    active=counts.get((r.id, "active"), 0),
                    entered=sum(n for (fid, _), n in counts.items() if fid == r.id),
                )
            )
        return out

    def info(self, key: str) -> FlowInfo:
        """One flow as :meth:`list` has it (by key or name)."""
        infos = self.list()
        row = self._row(key)
        return next(i for i in infos if i.key == row.key)

    def show(self, key: str) -> dict[str, Any]:
        row = self._row(key)
        program = compile_program(row.key, parse_definition(row.definition, path=row.key))
        return {
            "key": row.key,
            "name": row.name,
            "status": row.status,
            "version": row.version,
            "definition": row.definition,
            "steps": [
                {
                    "id": n.id,
                    "name": step_label(n),
                    "kind": n.kind,
                    "next": n.next,
                    **{name: first for name, weight, first in n.arms if weight is None},
                    **({"branches": [b[0] for b in n.branches]} if n.branches else {}),
                }
                for n in program.ordered()
            ],
            "stats": self.stats(row.key),
        }

    def stats(self, key: str) -> dict[str, Any]:
        """Contacts per step, exits by reason, messages per step, holdout vs treatment."""
        row = self._row(key)
        program = compile_program(row.key, parse_definition(row.definition, path=row.key))
        fe = flow_entries
        with self.engine.connect() as conn:
            at_step: dict[str, int] = dict(
                conn.execute(
                    select(fe.c.step, func.count())
                    .where(fe.c.flow_id == row.id, fe.c.status == "active")
                    .group_by(fe.c.step)
                ).all()
            )
            # Exits by reason and holdout vs treatment in one pass over the flow's entries,
            # grouped in the order of ix_flow_entries_flow_outcome (read from the index alone).
            exits: dict[str, int] = {}
            groups: dict[bool, int] = {}
            for status, reason, holdout, n in conn.execute(
                select(fe.c.status, fe.c.exit_reason, fe.c.holdout, func.count())
                .where(fe.c.flow_id == row.id)
                .group_by(fe.c.status, fe.c.exit_reason, fe.c.holdout)
            ):
                if status != "active":
                    exits[reason or ""] = exits.get(reason or "", 0) + n
                groups[bool(holdout)] = groups.get(bool(holdout), 0) + n
            messages: dict[str, dict[str, int]] = {}
            for step, status, n in conn.execute(
                select(outbox.c.step, outbox.c.status, func.count())
                .where(outbox.c.flow == row.key)
                .group_by(outbox.c.step, outbox.c.status)
            ):
                messages.setdefault(step, {})[status] = n
            outcomes: dict[str, dict[str, int]] = {}
            sc = flow_step_counts
            for step, outcome, n in conn.execute(
                select(sc.c.step, sc.c.outcome, sc.c.n).where(sc.c.flow_id == row.id)
            ):
                outcomes.setdefault(step, {})[outcome] = int(n)
        return {
            "flow": row.key,
            "step_names": step_labels(program),
            "entered": sum(groups.values()),
            "active_per_step": at_step,
            "exits": dict(sorted(exits.items())),
            "messages_per_step": messages,
            "outcomes_per_step": outcomes,
            "holdout": groups.get(True, 0),
            "treatment": groups.get(False, 0),
        }

    def entries_of(
        self, contact_id: int, *, active_only: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """The contact's flow entries (for ``contacts show``)."""
        fe = flow_entries
        q = (
            select(
                flows.c.key.label("flow"),
                fe.c.id.label("entry_id"),
                fe.c.step,
                fe.c.status,
                fe.c.entered_at,
                fe.c.wake_at,
                fe.c.exit_reason,
                fe.c.holdout,
                fe.c.branch,
                fe.c.path,
            )
            .join(flows, flows.c.id == fe.c.flow_id)
            .where(fe.c.contact_id == contact_id)
            .order_by(fe.c.id)
        )
        if active_only:
            q = q.where(and_(fe.c.status == "active"))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


def dump(definition: m.FlowDefinition) -> dict[str, Any]:
    return definition.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
    )


def check_conditions(program: Program, shown: str) -> None:
    """Validate every condition of the flow with the segment condition parser."""
    d = program.definition
    if d.goal is not None:
        validate_condition(d.goal.condition, path=shown, location="goal.condition")
    trigger = d.trigger
    if isinstance(trigger, m.ScheduleTrigger) and trigger.schedule.condition is not None:
        validate_condition(
            trigger.schedule.condition, path=shown, location="trigger.schedule.condition"
        )
    for node in program.nodes.values():
        kind = node.step_kind
        if kind is not None and kind.conditions is not None:
            for key, condition in kind.conditions(node.step):
                validate_condition(condition, path=shown, location=f"{node.id}.{key}")
