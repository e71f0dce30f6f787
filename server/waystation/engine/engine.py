"""The engine: starts, resumes, cancels and reads runs; owns the tasks that execute them.

An execution runs in a task of its own, so a caller whose deadline expires (or who goes
away) does not stop a run that was accepted: callers wait on the task through a shield.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, Literal

from pydantic import ValidationError

from waystation.engine import schema, travel
from waystation.engine.commands import (
    ResumeCommand,
    StartCommand,
    TimeTravelCommand,
    fingerprint,
)
from waystation.engine.definition import Step, Workflow
from waystation.engine.drift import check_fits, check_stored_data
from waystation.engine.errors import (
    InvalidArgument,
    InvalidInput,
    RequestReused,
    ResumeConflict,
    RunActive,
    RunAlreadyExists,
    RunNotActive,
    RunNotFound,
    RunNotSuspended,
    ServerDraining,
    SuspendedListError,
    VersionMismatch,
    Violations,
    WaystationError,
    WorkflowNotFound,
    violations_from,
)
from waystation.engine.events import EventType, make_event, settle_events, step_events
from waystation.engine.executor import Execution, RunChanged, error_json, insert_run
from waystation.engine.ids import check_new_run_id, check_run_id, check_workflow_id, new_run_id
from waystation.engine.model import (
    Labels,
    RunRecord,
    RunSnapshot,
    RunStatus,
    StepStatus,
    evolve,
    now,
    stop_unfinished,
)
from waystation.engine.paths import Path, format_path
from waystation.engine.result import WorkflowResultData, build_result
from waystation.engine.resume import (
    ResumeTarget,
    claimed_records,
    merge_context,
    resolve,
    validate_resume_data,
)
from waystation.engine.tracing import CallTrace, Telemetry
from waystation.engine.upkeep import TIMEOUT, Asleep, Upkeep
from waystation.storage.protocol import (
    Commit,
    Cursor,
    RequestKey,
    RequestRecord,
    RunFilter,
    SnapshotStore,
    StoreConflict,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
Recovery = Literal["continue", "fail"]


ELSEWHERE_POLL = 0.1
"""Seconds between two looks at a run that another replica drives, for a caller waiting
for its outcome (a replayed request id, an execution that lost the run)."""


STOP_WAIT = 5.0
"""Seconds a cancelled execution has to stop (its step sees the cancellation and may clean
up). One whose step catches the cancellation and goes on is left behind: CancelRun
cancels the run in the store all the same, and a shutdown does not wait for it."""


WATCH_PAGE_CHARS = 1 << 20
"""What a page of a WatchRun's stored events may take, as JSON; 500 events of 128 KB held
570 MB for five watchers that did not read."""


class SameRequest(Exception):
    """A resume's claim lost to a call with the same request id, which came at the same
    moment (both found the key unused): this call answers that call's outcome."""

    def __init__(self, seen: RequestRecord) -> None:
        super().__init__(seen.run_id)
        self.seen = seen


class Engine(Upkeep):
    def __init__(
        self,
        store: SnapshotStore,
        workflows: Iterable[Workflow],
        *,
        recovery: Recovery = "continue",
        resume_grace: float = 2.0,
        telemetry: Telemetry | None = None,
        lease_seconds: float = 15.0,
        replica_id: str = "",
    ) -> None:
        self.store = store
        self.replica_id = replica_id or uuid.uuid4().hex[:16]
        self.lease_seconds = lease_seconds
        self._lease_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self.telemetry = telemetry or Telemetry()
        self._workflows = {wf.id: wf for wf in workflows}
        self._recovery = recovery
        self._resume_grace = resume_grace
        self._active: dict[str, tuple[Execution, asyncio.Task[WorkflowResultData]]] = {}
        self._answers: dict[asyncio.Task[WorkflowResultData], _Answer] = {}
        """What the callers of a driving task are answered (see `_outcome`): the run's
        result once it settles WAITING on a durable sleep (the task sleeps on), else the
        task's own outcome."""
        self._changes: dict[str, asyncio.Event] = {}
        self._watchers: Counter[str] = Counter()  # open watches, by run
        self.draining = False
        """Set by `drain`: watches end (ServerDraining) rather than wait."""
        self._unacted: set[str] = set()
        self._told: set[str] = set()
        self.on_store_health: Callable[[bool], None] = lambda reachable: None
        self._stalled: set[str] = set()
        """Runs whose execution here stopped on a store failure: RUNNING, with this
        replica's lease, driven by nobody until `_revive` (the upkeep, once the store
        works, or a retry of the call) continues them."""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> int:
        """Take over the runs that no live process drives and continue them (or fail them,
        with recovery "fail"; a sleeping run wakes at its stored time either way); then keep
        our leases fresh and take over the runs of replicas that die. With an exclusive
        store (one SQLite file, one process) every RUNNING or WAITING run is ours at once;
        with a shared one, a run is taken over when its lease has expired."""
        now_ = float("inf") if getattr(self.store, "exclusive", False) else now()
        taken = await self._take_over(now_)
        self._lease_task = asyncio.create_task(self._keep_leases(), name="leases")
        self._timer_task = asyncio.create_task(self._expire_suspensions(), name="timeouts")
        return taken

    def drain(self) -> None:
        """A drain began: every watch that waits for the next event ends now."""
        self.draining = True
        for changed in self._changes.values():
            changed.set()

    async def close(self, grace: float = 5.0) -> None:
        """Let executions finish for up to `grace` seconds, then stop the rest; they stay
        RUNNING in the store and the next process continues them."""
        for background in (self._lease_task, self._timer_task):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        tasks = [task for _, task in self._active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for execution, task in list(self._active.values()):
            execution.shutting_down = True
            task.cancel()
        left = {run_id: task for run_id, (_, task) in self._active.items()}
        if left:
            await asyncio.wait(left.values(), timeout=STOP_WAIT)
        for run_id, task in left.items():
            if not task.done():
                _left_behind(run_id, "it stays RUNNING, for the next process")

    def _launch(self, execution: Execution) -> asyncio.Task[WorkflowResultData]:
        """Drive an execution that is accepted already in a task of its own."""
        self._adopt(execution)  # in the caller's context, before the task runs
        task = asyncio.create_task(execution.drive(), name=f"run:{execution.run_id}")
        self._active[execution.run_id] = (execution, task)
        self._track(task, [execution.run_id])
        execution.on_waiting = self._answers_waiting(task)
        return task

    def _drive_after(
        self, accept: Coroutine[Any, Any, Execution], name: str
    ) -> asyncio.Task[WorkflowResultData]:
        """A task that awaits `accept`, the transition that accepts a call (a start's
        insert, a resume's claim), then drives the execution it gives. Callers await it
        shielded: a transition that lands is driven even if the call's deadline expires
        meanwhile. One task for both, where a task for each cost a turn of the loop more
        (a few percent of a ResumeRun)."""
        driving: list[str] = []

        def drives(execution: Execution) -> None:
            self._active[execution.run_id] = (execution, task)
            driving.append(execution.run_id)
            if execution.kind == "start":
                self.telemetry.runs_started.add(
                    1, {"waystation.workflow_id": execution.workflow.id}
                )

        async def accept_and_drive() -> WorkflowResultData:
            execution = await accept
            self._adopt(execution)
            execution.on_waiting = self._answers_waiting(task)
            if execution.stored:
                drives(execution)
            else:  # its first commit stores the run; until then it is nobody's to track
                execution.on_stored = lambda: drives(execution)
            return await execution.drive()

        task = asyncio.create_task(accept_and_drive(), name=name)
        return self._track(task, driving)

    def _answers_waiting(
        self, task: asyncio.Task[WorkflowResultData]
    ) -> Callable[[WorkflowResultData], None]:
        """What an execution calls when its run settles WAITING: the first time, the
        callers of `task` are answered (a later sleep of the run changes nothing)."""
        answer = self._answers[task]

        def waiting(result: WorkflowResultData) -> None:
            if not answer.done():
                answer.set_result(result)

        return waiting

    def _adopt(self, execution: Execution) -> None:
        execution.on_commit = self._notify
        execution.telemetry = self.telemetry
        execution.lease_seconds = self.lease_seconds
        execution.snapshot.run.owner = self.replica_id
        execution.start_span()

    def _track(
        self, task: asyncio.Task[WorkflowResultData], driving: list[str]
    ) -> asyncio.Task[WorkflowResultData]:
        """Forget `task` when it ends (it drives the runs in `driving`, once they are
        known). An error of its accepting transition (a conflict) is its caller's to
        report; an error of its run is logged."""
        self._answers[task] = asyncio.get_running_loop().create_future()
        task.add_done_callback(lambda _: self._forget(driving, task))
        return task

    def _own(self, run: RunRecord) -> None:
        """Take the lease on `run` (written with its next commit)."""
        run.owner, run.lease_until = self.replica_id, now() + self.lease_seconds

    def _release(self, run: RunRecord) -> None:
        run.owner, run.lease_until = "", None

    def _leased_elsewhere(self, run: RunRecord) -> bool:
        """Whether another replica holds a lease on `run` that has not expired."""
        return bool(run.owner) and run.owner != self.replica_id and (run.lease_until or 0) > now()

    async def _outcome(
        self, task: asyncio.Task[WorkflowResultData], final: bool = False
    ) -> WorkflowResultData:
        """An execution's result, awaited shielded (a call's deadline does not stop its
        run): once it settles WAITING on a durable sleep, that result, unless the `final`
        one is asked for. If another replica changed the run under it (canceled it, took it
        over), the run's outcome there: its result once it no longer runs."""
        try:
            return await asyncio.shield(task if final else self._answers.get(task, task))
        except RunChanged as changed:
            while True:
                run, result = await self.get_run(changed.run_id)
                if run.create_time != changed.born:  # deleted, and its id taken again
                    raise RunNotFound(changed.run_id) from None
                if run.status not in (RunStatus.RUNNING, RunStatus.PENDING):
                    return result
                await asyncio.sleep(ELSEWHERE_POLL)

    async def _revive(self, run_id: str) -> None:
        """Continue a run whose execution here stopped on a store failure, from its last
        committed step, if it is still RUNNING or WAITING under this replica's lease.

        The store must first take a write of the run's: the one that renews its lease.
        Without it, a database that reads but cannot write (a full disk) had the step run
        again at every round of the upkeep; and after an outage longer than the lease, the
        round's takeover claimed the expired run for this same replica, which stopped the
        continuation just started here. StoreUnavailable: the run stays stalled."""
        snapshot = await self.store.load(run_id)
        if run_id in self._active:
            return
        self._stalled.discard(run_id)
        workflow = self._workflows.get(snapshot.run.workflow_id) if snapshot else None
        if (
            snapshot is None
            or workflow is None
            or snapshot.run.owner != self.replica_id
            or snapshot.run.status not in (RunStatus.RUNNING, RunStatus.WAITING)
        ):
            return  # settled, deleted, or taken over by another replica meanwhile
        run = snapshot.run
        expected = run.advance()
        run.lease_until = now() + self.lease_seconds
        try:
            await self.store.commit(Commit(run, expected, durable=False))
        except StoreConflict:
            return  # another replica took it over at this moment
        except StoreUnavailable:
            self._stalled.add(run_id)
            raise
        log.info("continuing run %s (its execution stopped on a store failure)", run_id)
        self._launch(Execution(self.store, workflow, snapshot))

    def _notify(self, run_id: str) -> None:
        """Wake the watchers of a run after a commit."""
        event = self._changes.pop(run_id, None)
        if event is not None:
            event.set()

    def _forget(self, driving: list[str], task: asyncio.Task[WorkflowResultData]) -> None:
        error = None if task.cancelled() else task.exception()  # retrieved, either way
        answer = self._answers.pop(task, None)
        if answer is not None and not answer.done():  # the callers get the task's outcome
            if task.cancelled():
                answer.cancel()
            elif error is not None:
                answer.set_exception(error)
                answer.exception()  # retrieved: callers, if any, report it
            else:
                answer.set_result(task.result())
        for run_id in driving:
            if self._active.get(run_id, (None, None))[1] is task:
                del self._active[run_id]
            if isinstance(error, StoreUnavailable):
                self._stalled.add(run_id)
            if isinstance(error, RunChanged):
                log.warning(
                    "run %s changed by another replica: this one stopped driving it", run_id
                )
            elif error is not None:
                log.error("run %s stopped: %r", run_id, error)

    # -- workflows ------------------------------------------------------------------------

    def workflows(self) -> list[Workflow]:
        return sorted(self._workflows.values(), key=lambda wf: wf.id)

    def workflow(self, workflow_id: str) -> Workflow:
        check_workflow_id(workflow_id)
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        return workflow

    # -- runs -----------------------------------------------------------------------------

    async def create_run(
        self, workflow_id: str, run_id: str = "", resource_id: str = "", request_id: str = ""
    ) -> RunRecord:
        workflow = self.workflow(workflow_id)
        # The resource is part of the key: a replay only ever answers a run of the resource
        # the caller was allowed to name.
        scope = f"create:{workflow.id}:{resource_id}"
        key = RequestKey(scope, request_id, fingerprint(run_id)) if request_id else None
        if seen := await self._seen(key):
            return await self._existing_run(seen.run_id)
        run = RunRecord(_run_id(run_id), workflow.id, resource_id, RunStatus.PENDING, version=1)
        try:
            await self._insert(run, key)
        except RunAlreadyExists:
            # A concurrent call with the same request id may have won the insert.
            if seen := await self._seen(key):
                return await self._existing_run(seen.run_id)
            raise
        return run

    async def _insert(
        self,
        run: RunRecord,
        key: RequestKey | None,
        events: list[dict[str, Any]] | None = None,
        durable: bool = True,
    ) -> None:
        await insert_run(self.store, run, key, events or [], durable)

    async def start_run(self, cmd: StartCommand) -> WorkflowResultData:
        workflow = self.workflow(cmd.workflow_id)
        existing = await self.store.load_run(cmd.run_id) if cmd.run_id else None
        if existing is not None:  # a PENDING run starts under its own resource, given or not
            cmd = dataclasses.replace(cmd, resource_id=_start_resource(existing, cmd))
        scope = f"start:{workflow.id}:{cmd.resource_id}"
        key = RequestKey(scope, cmd.request_id, cmd.fingerprint()) if cmd.request_id else None
        if seen := await self._seen(key):
            return await self._replay(seen, wait=not cmd.return_immediately)
        # Shielded: once the run is stored it is launched, even if this call's deadline
        # expires during the insert (else it would wait for a lease takeover).
        try:
            if cmd.return_immediately:
                launched = self._insert_and_launch(workflow, cmd, key, existing)
                accepted = await asyncio.shield(launched)
                return build_result(workflow, accepted, {})
            started = self._started(workflow, cmd, key, existing)
            return await self._outcome(self._drive_after(started, f"start:{workflow.id}"))
        except RunAlreadyExists:
            # A concurrent call with the same request id may have won the insert.
            if seen := await self._seen(key):
                return await self._replay(seen, wait=not cmd.return_immediately)
            raise

    async def _insert_and_launch(
        self,
        workflow: Workflow,
        cmd: StartCommand,
        key: RequestKey | None,
        existing: RunRecord | None,
    ) -> RunRecord:
        """The run as it was stored, with its run span's ids: its execution goes on changing
        the live header, and an answer built from that one mixed a later status with no
        steps. (The copy is taken after the launch, which starts the span, and before the
        task first runs, at this coroutine's next await.)"""
        execution = await self._started(workflow, cmd, key, existing)
        self._launch(execution)
        run = execution.snapshot.run
        accepted = evolve(run, resume_labels=run.resume_labels.copy())
        self.telemetry.runs_started.add(1, {"waystation.workflow_id": workflow.id})
        return accepted

    async def _started(
        self,
        workflow: Workflow,
        cmd: StartCommand,
        key: RequestKey | None,
        existing: RunRecord | None,
    ) -> Execution:
        # A caller that waits for the result is answered after the settle, so the insert
        # may ride with the first step's RUNNING record (one transaction fewer per start).
        defer = not cmd.return_immediately and isinstance(workflow.entries[0], Step)
        run, unsaved = await self._prepare_start(workflow, cmd, key, defer, existing)
        execution = Execution(self.store, workflow, RunSnapshot(run, {}), [key] if key else [])
        execution.kind, execution.call = "start", cmd.trace
        if unsaved is not None:
            execution.stored, execution.pending_events = False, unsaved
        return execution

    async def _prepare_start(
        self,
        workflow: Workflow,
        cmd: StartCommand,
        key: RequestKey | None,
        defer: bool,
        existing: RunRecord | None,
    ) -> tuple[RunRecord, list[dict[str, Any]] | None]:
        """The run, RUNNING and stored; or, with `defer` and a new run id, not stored yet,
        with the events its first commit is to carry. `existing`: the run stored under
        `cmd.run_id`, as read before the request id was looked up (a start that changed it
        meanwhile makes this one's commit conflict: RunAlreadyExists)."""
        try:
            input_json = schema.normalize(workflow.input_schema, cmd.input_data)
        except ValidationError as exc:
            problems = violations_from(exc, "input_data", cmd.input_data)
            raise InvalidInput(workflow.id, problems) from exc
        try:
            state = schema.normalize(workflow.state_schema, cmd.initial_state or {})
        except ValidationError as exc:
            problems = violations_from(exc, "initial_state", cmd.initial_state or {})
            raise InvalidInput(workflow.id, problems) from exc
        if existing is None:
            run = RunRecord(
                _run_id(cmd.run_id),
                workflow.id,
                cmd.resource_id,
                RunStatus.RUNNING,
                version=1,
                input=input_json,
                state=state,
                request_context=dict(cmd.request_context),
            )
            self._own(run)
            started = [make_event(run, EventType.RUN_STARTED)]
            if defer:
                return run, started
            # Durable only if answered now; otherwise the settle's fsync carries it.
            await self._insert(run, key, started, durable=cmd.return_immediately)
            return run, None
        if existing.workflow_id != workflow.id or existing.status is not RunStatus.PENDING:
            raise RunAlreadyExists(existing.run_id, existing.status)
        expected = existing.advance()
        existing.status, existing.input, existing.state = RunStatus.RUNNING, input_json, state
        existing.request_context = dict(cmd.request_context)
        self._own(existing)
        started = [make_event(existing, EventType.RUN_STARTED)]
        try:
            await self.store.commit(
                Commit(
                    existing,
                    expected,
                    new_request=key,
                    events=started,
                    durable=cmd.return_immediately,
                )
            )
        except StoreConflict:
            raise RunAlreadyExists(existing.run_id, "running") from None
        return existing, None

    async def resume_run(self, cmd: ResumeCommand) -> WorkflowResultData:
        started = asyncio.get_running_loop().time()
        marks: dict[Path, float | None] | None = None
        while True:
            try:
                accepted = await self._accept_resume(cmd, marks=marks)
                if isinstance(accepted, WorkflowResultData):
                    return accepted  # a replayed request id, or validate_only
                result = await self._outcome(accepted)
            except SameRequest as same:  # a call with this request id claimed it first
                return await self._replay(same.seen)
            except ResumeConflict as conflict:
                if first := await self._first_try(_resume_key(cmd), cmd.run_id):
                    return await self._replay(first)  # it was this call, sent twice at once
                marks = await self._sibling_settled(cmd, conflict, marks)
                if marks is None:
                    raise
                continue  # another step of the run was resumed first: now it is this one's turn
            break
        latency = asyncio.get_running_loop().time() - started
        self.telemetry.resume_latency.record(
            latency, {"waystation.workflow_id": result.workflow_id}
        )
        return result

    async def _accept_resume(
        self,
        cmd: ResumeCommand,
        expired: bool = False,
        marks: dict[Path, float | None] | None = None,
    ) -> WorkflowResultData | asyncio.Task[WorkflowResultData]:
        """Check every rule, claim the suspension and launch the continuation; or the answer
        at once for a replayed request id or a dry run."""
        snapshot = await self._existing_snapshot(cmd.run_id, cmd.workflow_id)
        key = _resume_key(cmd)
        if seen := await self._seen(key):
            return await self._replay(seen)  # (a dry run answers the run as it is now)
        snapshot = await self._wait_suspended(snapshot, cmd)
        run = snapshot.run
        if not expired and cmd.actor != TIMEOUT and run.due_at is not None and run.due_at <= now():
            # A deadline passed that the upkeep has not acted on yet (it looks every quarter
            # of a second): act on it first, as it would have, then judge the resume.
            await self._expire(run.run_id)
            return await self._accept_resume(cmd, expired=True, marks=marks)
        if cmd.expected_version is not None and cmd.expected_version != run.version:
            raise VersionMismatch(run.run_id, cmd.expected_version, run.version)
        workflow = self.workflow(run.workflow_id)
        if run.status in (RunStatus.SUSPENDED, RunStatus.WAITING):
            check_fits(workflow, snapshot)  # a deploy since may have moved its steps
        try:
            path, records = resolve(workflow, snapshot, cmd.step, cmd.label, cmd.foreach_index)
        except SuspendedListError as exc:
            exc.labels = snapshot.run.resume_labels  # listed in the refusal's details
            raise
        if marks is not None and marks != {p: snapshot.steps[p].suspended_at for p in records}:
            raise ResumeConflict(run.run_id, run.status)  # suspended anew since it was named
        data = validate_resume_data(workflow, run.run_id, path, cmd.resume_data)
        check_stored_data(workflow, snapshot, records)
        target = ResumeTarget(path, records, data)
        if cmd.validate_only:
            return build_result(workflow, run, snapshot.steps)
        # The claim is made in the continuation's task: a claim that lands is driven, even
        # if this call's deadline expires during the commit (else the run would wait for a
        # lease takeover); a claim that conflicts fails the task.
        claimed = self._claimed(workflow, snapshot, target, cmd, key)
        return self._drive_after(claimed, f"run:{run.run_id}")

    async def _claimed(
        self,
        workflow: Workflow,
        snapshot: RunSnapshot,
        target: ResumeTarget,
        cmd: ResumeCommand,
        key: RequestKey | None,
    ) -> Execution:
        link_to = dict(snapshot.run.trace)  # the context stored when the run suspended
        asleep = self._asleep_here(workflow, snapshot)
        await self._claim(snapshot, target, cmd, key)
        if asleep is not None:
            self._supersede(asleep)
        self.telemetry.runs_resumed.add(1, {"waystation.workflow_id": workflow.id})
        execution = Execution(self.store, workflow, snapshot, [key] if key else [])
        execution.kind, execution.call, execution.link_to = "resume", cmd.trace, link_to
        return execution

    def _asleep_here(self, workflow: Workflow, snapshot: RunSnapshot) -> Asleep | None:
        """The execution of this process that drives `snapshot`'s run, if the run is
        WAITING (a branch sleeps beside the suspended one a resume claims), with its task
        and, if it has not told its callers yet, the result it would have told them."""
        active = self._active.get(snapshot.run.run_id)
        if active is None or snapshot.run.status is not RunStatus.WAITING:
            return None
        execution, task = active
        answer = self._answers.get(task)
        if answer is None or answer.done():
            return execution, task, None
        return execution, task, build_result(workflow, evolve(snapshot.run), dict(snapshot.steps))

    def _supersede(self, asleep: Asleep) -> None:
        """A claim of a WAITING run landed while an execution sleeps in it here: it stops
        without writing anything more, and the claim's continuation sleeps on in its place,
        until the same stored wake-up times. Callers not told yet get the run as it settled."""
        execution, task, as_settled = asleep
        execution.shutting_down = True
        answer = self._answers.pop(task, None)
        if answer is not None and not answer.done() and as_settled is not None:
            answer.set_result(as_settled)
        task.cancel()

    async def _claim(
        self,
        snapshot: RunSnapshot,
        target: ResumeTarget,
        cmd: ResumeCommand,
        key: RequestKey | None,
    ) -> None:
        """Compare-and-set SUSPENDED -> RUNNING on the version that was read; the records it
        writes carry the resume data, so an acknowledged resume survives a crash."""
        run = snapshot.run
        records = claimed_records(snapshot, target, cmd.retry_count, cmd.actor or "anonymous")
        expected = run.advance()
        run.status = RunStatus.RUNNING
        run.resume_count += 1
        run.request_context = merge_context(run.request_context, cmd.request_context)
        self._own(run)
        events = step_events(run, snapshot.steps, records)
        changed = {format_path(p): r for p, r in records.items()}
        try:
            # Not fsynced: the call is answered after the settle, whose fsync carries this
            # commit too (a process that dies keeps it; a power cut before the answer may
            # lose it, and then the caller, who got no answer, retries).
            commit = Commit(run, expected, changed, new_request=key, events=events, durable=False)
            await self.store.commit(commit)
        except StoreConflict:
            now_run = await self.store.load_run(run.run_id)
            if now_run is None or now_run.create_time != run.create_time:
                raise RunNotFound(run.run_id) from None  # deleted meanwhile (and made again)
            if seen := await self._seen(key):
                raise SameRequest(seen) from None
            raise ResumeConflict(run.run_id, now_run.status, seen=snapshot) from None
        snapshot.steps.update(records)
        self._notify(run.run_id)

    async def _wait_suspended(self, snapshot: RunSnapshot, cmd: ResumeCommand) -> RunSnapshot:
        """The run's snapshot once it can be resumed: SUSPENDED, or WAITING with a step
        suspended beside the branches that sleep (Mastra refuses any resume during a sleep).
        A run still RUNNING from its start is given a short grace to reach its first
        suspension (as Mastra does), unless the step the resume names has suspended already:
        then the resume waits for the run to settle; a run RUNNING because another resume
        claimed it is a conflict at once."""
        deadline = asyncio.get_running_loop().time() + self._resume_grace
        while True:
            run = snapshot.run
            if run.status is RunStatus.WAITING and any(
                record.status is StepStatus.SUSPENDED for record in snapshot.steps.values()
            ):
                return snapshot  # (its sleeping execution, if here, is not resuming anything)
            if (self._resuming_here(run.run_id) and run.status is not RunStatus.WAITING) or (
                run.status is RunStatus.RUNNING and run.resume_count > 0
            ):
                # (A continuation that settled WAITING, asleep, has settled: a resume then is
                # answered as the run is, the same on every replica and after a restart.)
                raise ResumeConflict(run.run_id, run.status, seen=snapshot, continuing=True)
            if run.status is RunStatus.SUSPENDED:
                return snapshot
            if run.status is RunStatus.RUNNING and self._suspended_already(cmd, snapshot):
                # A parallel branch or a foreach item that suspended while the others still
                # work: resumed once the run settles, as resumes of one run are applied one
                # after the other (Mastra refuses it until then: its issues #9430, #10746).
                raise ResumeConflict(run.run_id, run.status, seen=snapshot)
            if run.status is not RunStatus.RUNNING or (
                asyncio.get_running_loop().time() >= deadline
            ):
                raise RunNotSuspended(run.run_id, run.status)
            await asyncio.sleep(0.025)
            snapshot = await self._existing_snapshot(run.run_id)

    def _suspended_already(self, cmd: ResumeCommand, snapshot: RunSnapshot) -> bool:
        """Whether a resume that names its step (or label) names one that has suspended in
        `snapshot`, a run still at work; its data is checked now, so that a refusal does
        not wait. A dry run, and a resume that names no step, do not wait."""
        if cmd.validate_only or not (cmd.step or cmd.label):
            return False
        try:
            workflow = self.workflow(snapshot.run.workflow_id)
            path, _ = resolve(workflow, snapshot, cmd.step, cmd.label, cmd.foreach_index)
        except WaystationError:
            return False  # not suspended (yet): the grace, then the answer as the run is then
        validate_resume_data(workflow, snapshot.run.run_id, path, cmd.resume_data)
        return True

    async def _sibling_settled(
        self,
        cmd: ResumeCommand,
        conflict: ResumeConflict,
        marks: dict[Path, float | None] | None,
    ) -> dict[Path, float | None] | None:
        """After a resume lost to another: if the winner resumed another step of the run
        (parallel branches and foreach items are resumed one at a time), wait until the
        winner's continuation has settled and return the suspensions this resume names
        (`marks`, when it lost before), by when each one suspended, for it to claim now.
        None when one of them was resumed by someone else or suspended anew since, or when
        the resume read the run during the winner's continuation and names a suspension
        that continuation made (its caller meant the one before: a conflict, DESIGN §4)."""
        seen: RunSnapshot | None = conflict.seen
        if seen is None:
            return None
        if marks is None:
            try:
                workflow = self.workflow(seen.run.workflow_id)
                _, wanted = resolve(workflow, seen, cmd.step, cmd.label, cmd.foreach_index)
            except WaystationError:
                return None
            marks = {path: seen.steps[path].suspended_at for path in wanted}
            if conflict.continuing:
                claimed = max((r.resumed_at or 0.0 for r in seen.steps.values()), default=0.0)
                if any(mark is None or mark >= claimed for mark in marks.values()):
                    return None
        while True:
            snapshot = await self.store.load(cmd.run_id)
            if snapshot is None or snapshot.run.create_time != seen.run.create_time:
                return None
            for path, mark in marks.items():
                record = snapshot.steps.get(path)
                if record is not None and (record.resumed_at or 0.0) > (mark or 0.0):
                    return None  # resumed by another caller
            if snapshot.run.status.is_final:
                return marks  # canceled, failed or ended meanwhile: the retry says so
            for path, mark in marks.items():
                record = snapshot.steps.get(path)
                if record is None or record.status is not StepStatus.SUSPENDED:
                    return None
                if record.suspended_at != mark:
                    return None
            if snapshot.run.status is RunStatus.WAITING:
                return marks  # settled, a branch asleep: the suspended ones can be resumed
            active = self._active.get(cmd.run_id)
            if active is not None:  # until its caller is answered too
                await asyncio.wait([active[1]], timeout=0.5)
            elif snapshot.run.status is RunStatus.RUNNING:
                await asyncio.sleep(ELSEWHERE_POLL)  # driven by another replica
            else:
                return marks  # SUSPENDED again (or not: the retry says what it is now)

    def _resuming_here(self, run_id: str) -> bool:
        """Whether a resume's continuation of `run_id` is still going in this process."""
        active = self._active.get(run_id)
        return active is not None and active[0].kind == "resume"

    async def _seen(self, key: RequestKey | None) -> RequestRecord | None:
        """What the first call with this request id led to, if there was one; refused when
        that call asked for something else (a retry repeats its call as it was)."""
        seen = await self.store.get_request(key) if key else None
        if seen and key:
            _check_same_call(key, seen.fingerprint)
        return seen

    async def _first_try(self, key: RequestKey | None, run_id: str) -> RequestRecord | None:
        """For a call refused because the run was busy or changed under it: its request
        id's first call, when that is what took the run (a retry that raced it, or one
        request sent twice at once), for the refused one to answer that call's outcome.
        The first call's execution here holds the key before the store has it."""
        if key is None:
            return None
        active = self._active.get(run_id)
        for first in active[0].requests if active else ():
            if first == key:
                _check_same_call(key, first.fingerprint)
                return RequestRecord(first, run_id)
        return await self._seen(key)

    async def _replay(self, seen: RequestRecord, wait: bool = True) -> WorkflowResultData:
        """The first call's outcome for a repeated request id. While the first call's
        execution runs here, wait for it (unless the call asked not to wait: then the run as
        it stands); while another replica drives it, or its driver died and a replica is
        about to take it over, wait for it to settle there; a run that no process drives is
        answered as it stands after a short grace (its request may have been accepted by a
        dead process)."""
        deadline = asyncio.get_running_loop().time() + self._resume_grace
        key_run = seen.run_id
        while True:
            if seen.outcome is not None:
                return WorkflowResultData.from_json(seen.outcome)
            if not wait:
                return (await self.get_run(key_run))[1]
            if key_run in self._stalled:
                await self._revive(key_run)  # the first call failed on the store: go on now
            active = self._active.get(key_run)
            if active is not None:
                return await self._outcome(active[1])
            run, result = await self.get_run(key_run)
            if run.status not in (RunStatus.RUNNING, RunStatus.PENDING):
                return result
            if self._leased_elsewhere(run) or (run.status is RunStatus.RUNNING and run.owner):
                # Until it settles where it runs; or, when the lease of a replica that died
                # has expired, until a replica takes it over and it settles there.
                await asyncio.sleep(ELSEWHERE_POLL)
            elif asyncio.get_running_loop().time() >= deadline:
                return result
            else:
                await asyncio.sleep(0.02)
            seen = await self.store.get_request(seen.key) or seen

    async def cancel_run(self, run_id: str, reason: str = "") -> WorkflowResultData:
        """Cancel a run (running steps see cancellation); a no-op on a finished one."""
        while True:
            run = await self._existing_run(run_id)
            if run.status.is_final:
                return (await self.get_run(run_id))[1]
            active = self._active.get(run_id)
            if active is not None and run.status in (RunStatus.RUNNING, RunStatus.WAITING):
                active[1].cancel(reason or "run canceled")
                try:
                    done, _ = await asyncio.wait([active[1]], timeout=STOP_WAIT)
                    if done:
                        return await self._outcome(active[1], final=True)
                except asyncio.CancelledError:
                    continue
                self._abandon(run_id, *active)
            if await self._cancel_stored(run_id, reason):
                return (await self.get_run(run_id))[1]

    def _abandon(
        self, run_id: str, execution: Execution, task: asyncio.Task[WorkflowResultData]
    ) -> None:
        """Leave behind an execution whose step ignores its cancellation: it writes nothing
        more (the cancel's commit moves the run's version from under it), and the run is
        no longer this process's to drive (so it can be deleted, or started anew)."""
        _left_behind(run_id, "canceled in the store")
        execution.lost = True
        if self._active.get(run_id, (None, None))[1] is task:
            del self._active[run_id]

    async def _cancel_stored(self, run_id: str, reason: str) -> bool:
        """Cancel a run that no task of this process drives; False if it changed meanwhile."""
        snapshot = await self.store.load(run_id)
        if snapshot is None:
            raise RunNotFound(run_id)
        run = snapshot.run
        expected = run.advance()
        run.status = RunStatus.CANCELED
        run.error = error_json("CANCELED", reason or "run canceled")
        self._release(run)
        stopped = stop_unfinished(snapshot)
        before = dict(snapshot.steps)
        snapshot.steps.update(stopped)
        result = build_result(self._workflows.get(run.workflow_id), run, snapshot.steps)
        events = settle_events(run, before, stopped, result.to_json())
        changed = {format_path(p): r for p, r in stopped.items()}
        try:
            await self.store.commit(Commit(run, expected, changed, events=events))
        except StoreConflict:
            return False
        self._notify(run_id)
        return True

    async def get_run(self, run_id: str) -> tuple[RunRecord, WorkflowResultData]:
        check_run_id(run_id)
        snapshot = await self.store.load(run_id)
        if snapshot is None:
            raise RunNotFound(run_id)
        workflow = self._workflows.get(snapshot.run.workflow_id)
        return snapshot.run, build_result(workflow, snapshot.run, snapshot.steps)

    async def _existing_snapshot(self, run_id: str, workflow_id: str = "") -> RunSnapshot:
        """The run with its steps, read at one version; NOT_FOUND as `_existing_run`."""
        check_run_id(run_id)
        snapshot = await self.store.load(run_id)
        if snapshot is None or (workflow_id and snapshot.run.workflow_id != workflow_id):
            raise RunNotFound(run_id, workflow_id)
        return snapshot

    async def _existing_run(self, run_id: str, workflow_id: str = "") -> RunRecord:
        check_run_id(run_id)
        run = await self.store.load_run(run_id)
        if run is None or (workflow_id and run.workflow_id != workflow_id):
            raise RunNotFound(run_id, workflow_id)
        return run

    async def restart_run(
        self,
        run_id: str,
        request_context: dict[str, Any],
        trace: CallTrace | None = None,
        request_id: str = "",
        force: bool = False,
    ) -> WorkflowResultData:
        """Continue a run left RUNNING or WAITING by a process that died. A run whose lease
        another replica holds is taken over only with `force` (its driver may be alive)."""
        check_run_id(run_id)
        asked = fingerprint(request_context, force)
        key = RequestKey(f"restart:{run_id}", request_id, asked) if request_id else None
        if seen := await self._seen(key):
            return await self._replay(seen)
        try:
            return await self._restart(run_id, request_context, trace, key, force)
        except RunNotActive:
            if first := await self._first_try(key, run_id):
                return await self._replay(first)  # it was this call, sent twice at once
            raise

    async def _restart(
        self,
        run_id: str,
        request_context: dict[str, Any],
        trace: CallTrace | None,
        key: RequestKey | None,
        force: bool,
    ) -> WorkflowResultData:
        snapshot = await self.store.load(run_id)
        if snapshot is None:
            raise RunNotFound(run_id)
        run = snapshot.run
        if run.status not in (RunStatus.RUNNING, RunStatus.WAITING):
            raise RunNotActive(run_id, run.status)
        if run_id in self._active:
            raise RunNotActive(run_id, run.status, "this replica drives it")
        if self._leased_elsewhere(run) and not force:
            raise RunNotActive(
                run_id,
                run.status,
                f"replica {run.owner} drives it, and its lease runs"
                f" {(run.lease_until or 0.0) - now():.0f} s more; force takes it over if that"
                " replica is dead",
                owner=run.owner,
            )
        run.request_context = merge_context(run.request_context, request_context)
        workflow = self.workflow(run.workflow_id)
        check_fits(workflow, snapshot)  # a deploy since may have moved its steps
        # Take the run over by compare-and-set: a driver that is still alive loses its next
        # commit and stops, so the run is never driven twice from here on.
        expected = run.advance()
        self._own(run)
        try:
            await self.store.commit(Commit(run, expected, new_request=key))
        except StoreConflict:
            raise RunNotActive(run_id, run.status, "another call changed it meanwhile") from None
        execution = Execution(self.store, workflow, snapshot, [key] if key else [])
        execution.kind, execution.call = "restart", trace
        return await self._outcome(self._launch(execution))

    async def time_travel_run(self, cmd: TimeTravelCommand) -> WorkflowResultData:
        """Re-execute from `cmd.step`, keeping the results of the steps before it."""
        check_run_id(cmd.run_id)
        scope = f"travel:{cmd.run_id}"
        key = RequestKey(scope, cmd.request_id, cmd.fingerprint()) if cmd.request_id else None
        if seen := await self._seen(key):
            return await self._replay(seen)
        try:
            return await self._time_travel(cmd, key)
        except (RunActive, StoreConflict):
            if first := await self._first_try(key, cmd.run_id):
                return await self._replay(first)  # it was this call, sent twice at once
            raise

    async def _time_travel(
        self, cmd: TimeTravelCommand, key: RequestKey | None
    ) -> WorkflowResultData:
        snapshot = await self.store.load(cmd.run_id)
        if snapshot is None:
            raise RunNotFound(cmd.run_id)
        run = snapshot.run
        if run.status in (RunStatus.RUNNING, RunStatus.WAITING) or cmd.run_id in self._active:
            raise RunActive(run.run_id, run.status, "time-travel")
        workflow = self.workflow(run.workflow_id)
        data = None
        if cmd.resume_data is not None:
            travel.check_resumable(workflow, snapshot, cmd.step)
            data = validate_resume_data(workflow, run.run_id, cmd.step, cmd.resume_data)
        writes, dropped = travel.plan(workflow, snapshot, cmd, data)
        if cmd.initial_state is not None:
            try:
                run.state = schema.normalize(workflow.state_schema, cmd.initial_state)
            except ValidationError as exc:
                problems = violations_from(exc, "initial_state", cmd.initial_state)
                raise InvalidInput(workflow.id, problems) from exc
        run.status, run.result, run.error = RunStatus.RUNNING, None, None
        run.request_context = merge_context(run.request_context, cmd.request_context)
        kept = {p for p in snapshot.steps if p not in dropped} | set(writes)
        run.resume_labels = Labels((k, t) for k, t in run.resume_labels.items() if t.path in kept)
        execution = Execution(self.store, workflow, snapshot, [key] if key else [])
        execution.kind, execution.call = "time_travel", cmd.trace
        execution.pending_events = [make_event(run, EventType.RUN_STARTED)]
        self._own(run)
        await execution.commit(writes, deleted=dropped, new_request=key)
        return await self._outcome(self._launch(execution))

    async def delete_run(self, run_id: str) -> None:
        """Delete a run that no process executes: the stored status says so (another
        replica may drive it), and the delete is a compare-and-set on the version read, so
        a resume claimed meanwhile is not deleted under its continuation (RUN_CHANGED)."""
        run = await self._existing_run(run_id)
        if run.status in (RunStatus.RUNNING, RunStatus.WAITING) or run_id in self._active:
            raise RunActive(run_id, run.status, "delete")
        if not await self.store.delete_run(run_id, run.version):
            raise RunNotFound(run_id)
        self._notify(run_id)

    async def watch(self, run_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        """The run's events after `after`, stored ones first, then live ones, until the run
        is final and every event was sent; RunNotFound if the run is deleted meanwhile,
        also when a new run has then taken its id (its events are another run's, and may
        be another tenant's: the caller was authorized for this one)."""
        born = (await self._existing_run(run_id)).create_time
        limit = 64  # until the size of this run's events is known
        self._watchers[run_id] += 1
        try:
            while True:
                changed = self._changes.setdefault(run_id, asyncio.Event())
                # A client that stops reading holds one page here: about a megabyte, or one
                # event if that is larger (up to the largest message the server sends).
                events = await self.store.list_events(run_id, after, limit, WATCH_PAGE_CHARS)
                if events:  # the next page's length, from these events' sizes
                    limit = max(1, min(500, WATCH_PAGE_CHARS * len(events) // max(1, events.size)))
                run = await self.store.load_run(run_id)  # after the events: they are its own
                if run is None or run.create_time != born:
                    raise RunNotFound(run_id)  # deleted: the stream must not end as if settled
                for event in events:
                    yield event
                    after = event["sequence"]
                if events:
                    continue
                if run.status.is_final and run.event_sequence <= after:
                    return
                if self.draining:  # every event stored was sent: go on elsewhere from here
                    raise ServerDraining(run_id, after)
                # Another process may drive the run: look at the store now and then anyway.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=0.25)
        finally:  # the run's wake-up stays only while someone watches it
            self._watchers[run_id] -= 1
            if not self._watchers[run_id]:
                del self._watchers[run_id]
                self._changes.pop(run_id, None)

    async def list_runs(
        self, where: RunFilter, page_size: int, page_token: str
    ) -> tuple[list[RunRecord], str]:
        problems = Violations()
        problems.check(check_page_size, page_size, default=None)
        after = problems.check(_decode_token, page_token, where, default=None)
        problems.raise_any()
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        runs = await self.store.list_runs(where, limit + 1, after)
        if len(runs) <= limit:
            return runs, ""
        last = runs[limit - 1]
        return runs[:limit], _encode_token(Cursor(last.create_time, last.run_id), where)


_Answer = asyncio.Future[WorkflowResultData]


def _start_resource(existing: RunRecord, cmd: StartCommand) -> str:
    """The resource a start of the existing run is under: the run's own (a request id is
    kept under it, for a retry with or without it); INVALID_ARGUMENT for another."""
    if cmd.resource_id in ("", existing.resource_id):
        return existing.resource_id
    raise InvalidArgument(
        "resource_id",
        f"run {existing.run_id!r} belongs to {existing.resource_id!r}: give that, or no"
        " resource_id",
    )


def _run_id(requested: str) -> str:
    check_new_run_id(requested)
    return requested or new_run_id()


def _fingerprint(where: RunFilter) -> str:
    text = json.dumps(
        [
            where.workflow_id,
            sorted(s.value for s in where.statuses),
            where.resource_id,
            where.created_after,
            where.created_before,
            sorted(where.resource_prefixes),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_token(cursor: Cursor, where: RunFilter) -> str:
    raw = json.dumps({"t": cursor.create_time, "r": cursor.run_id, "f": _fingerprint(where)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def check_page_size(page_size: int) -> None:
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")


def read_page_token(token: str) -> tuple[Cursor, str] | None:
    """A ListRuns page token's cursor and the fingerprint of the filters it was made for
    (None for no token); InvalidArgument if it is not one."""
    if not token:
        return None
    try:
        raw: Any = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return Cursor(float(raw["t"]), str(raw["r"])), str(raw["f"])
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidArgument("page_token", "malformed page token") from exc


def _decode_token(token: str, where: RunFilter) -> Cursor | None:
    read = read_page_token(token)
    if read is None:
        return None
    cursor, fingerprint = read
    if fingerprint != _fingerprint(where):
        raise InvalidArgument(
            "page_token",
            "the page token was made for other filters or by another version of the server:"
            " list again without it",
        )
    return cursor


def _resume_key(cmd: ResumeCommand) -> RequestKey | None:
    """A resume's request key; none for a dry run, which neither uses nor records it."""
    if not cmd.request_id or cmd.validate_only:
        return None
    return RequestKey(f"resume:{cmd.run_id}", cmd.request_id, cmd.fingerprint())


def _left_behind(run_id: str, then: str) -> None:
    log.error(
        "run %s did not stop within %.0f s of its cancellation (a step catches it and goes"
        " on): left behind, %s",
        run_id,
        STOP_WAIT,
        then,
    )


def _check_same_call(key: RequestKey, first: str) -> None:
    """RequestReused unless `key`'s call asks what the one with fingerprint `first` did (a
    key stored before fingerprints has none, and matches any call)."""
    if first and key.fingerprint and first != key.fingerprint:
        raise RequestReused(key.request_id, key.scope)
