"""The engine: starts, resumes, cancels and reads runs; owns the tasks that execute them.

An execution runs in a task of its own, so a caller whose deadline expires (or who goes
away) does not stop a run that was accepted: callers wait on the task through a shield.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import ValidationError

from waystation.engine import schema
from waystation.engine.commands import ResumeCommand, StartCommand
from waystation.engine.definition import Workflow
from waystation.engine.errors import (
    InvalidArgument,
    InvalidInput,
    ResumeConflict,
    RunAlreadyExists,
    RunNotFound,
    RunNotSuspended,
    VersionMismatch,
    WorkflowNotFound,
    violations_from,
)
from waystation.engine.executor import Execution, error_json
from waystation.engine.model import RunRecord, RunSnapshot, RunStatus
from waystation.engine.paths import format_path
from waystation.engine.result import WorkflowResultData, build_result
from waystation.engine.resume import (
    ResumeTarget,
    claimed_records,
    merge_context,
    resolve_path,
    validate_resume_data,
)
from waystation.storage.protocol import (
    Commit,
    Cursor,
    RequestKey,
    RequestRecord,
    RunFilter,
    SnapshotStore,
    StoreConflict,
)

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
Recovery = Literal["continue", "fail"]


class Engine:
    def __init__(
        self,
        store: SnapshotStore,
        workflows: Iterable[Workflow],
        *,
        recovery: Recovery = "continue",
        resume_grace: float = 2.0,
    ) -> None:
        self.store = store
        self._workflows = {wf.id: wf for wf in workflows}
        self._recovery = recovery
        self._resume_grace = resume_grace
        self._active: dict[str, tuple[Execution, asyncio.Task[WorkflowResultData]]] = {}
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> int:
        """Continue (or fail) every run left RUNNING by a process that died; returns how many."""
        run_ids = await self.store.runs_with_status(RunStatus.RUNNING, limit=1_000_000)
        for run_id in run_ids:
            snapshot = await self.store.load(run_id)
            if snapshot is None or run_id in self._active:
                continue
            workflow = self._workflows.get(snapshot.run.workflow_id)
            if workflow is None or self._recovery == "fail":
                await self._fail_interrupted(snapshot, workflow)
            else:
                log.info("continuing run %s interrupted by a restart", run_id)
                self._launch(Execution(self.store, workflow, snapshot))
        return len(run_ids)

    async def _fail_interrupted(self, snapshot: RunSnapshot, workflow: Workflow | None) -> None:
        run = snapshot.run
        expected = run.version
        run.version, run.status = run.version + 1, RunStatus.FAILED
        run.error = error_json("RUN_INTERRUPTED", "the process driving this run stopped")
        await self.store.commit(Commit(run, expected))

    async def close(self, grace: float = 5.0) -> None:
        """Let executions finish for up to `grace` seconds, then stop the rest; they stay
        RUNNING in the store and the next process continues them."""
        tasks = [task for _, task in self._active.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._closing = True
        for execution, task in list(self._active.values()):
            execution.shutting_down = True
            task.cancel()
        await asyncio.gather(*(t for _, t in self._active.values()), return_exceptions=True)

    def _launch(self, execution: Execution) -> asyncio.Task[WorkflowResultData]:
        task = asyncio.create_task(execution.drive(), name=f"run:{execution.run_id}")
        self._active[execution.run_id] = (execution, task)
        task.add_done_callback(lambda _: self._forget(execution.run_id, task))
        return task

    def _forget(self, run_id: str, task: asyncio.Task[WorkflowResultData]) -> None:
        if run_id in self._active and self._active[run_id][1] is task:
            del self._active[run_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("run %s stopped: %r", run_id, task.exception())

    # -- workflows ------------------------------------------------------------------------

    def workflows(self) -> list[Workflow]:
        return sorted(self._workflows.values(), key=lambda wf: wf.id)

    def workflow(self, workflow_id: str) -> Workflow:
        if not workflow_id:
            raise InvalidArgument("workflow_id", "required")
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        return workflow

    # -- runs -----------------------------------------------------------------------------

    async def create_run(
        self, workflow_id: str, run_id: str = "", resource_id: str = "", request_id: str = ""
    ) -> RunRecord:
        workflow = self.workflow(workflow_id)
        key = RequestKey(f"create:{workflow.id}", request_id) if request_id else None
        if key and (seen := await self.store.get_request(key)):
            return await self._existing_run(seen.run_id)
        run = RunRecord(_run_id(run_id), workflow.id, resource_id, RunStatus.PENDING, version=1)
        await self._insert(run, key)
        return run

    async def _insert(self, run: RunRecord, key: RequestKey | None) -> None:
        try:
            await self.store.create_run(run, key)
        except StoreConflict:
            existing = await self.store.load_run(run.run_id)
            raise RunAlreadyExists(run.run_id, existing.status if existing else "unknown") from None

    async def start_run(self, cmd: StartCommand) -> WorkflowResultData:
        workflow = self.workflow(cmd.workflow_id)
        key = RequestKey(f"start:{workflow.id}", cmd.request_id) if cmd.request_id else None
        if key and (seen := await self.store.get_request(key)):
            return await self._replay(seen)
        run = await self._prepare_start(workflow, cmd, key)
        task = self._launch(
            Execution(self.store, workflow, RunSnapshot(run, {}), [key] if key else [])
        )
        if cmd.return_immediately:
            return build_result(workflow, run, {})
        return await asyncio.shield(task)

    async def _prepare_start(
        self, workflow: Workflow, cmd: StartCommand, key: RequestKey | None
    ) -> RunRecord:
        try:
            input_json = schema.normalize(workflow.input_schema, cmd.input_data)
        except ValidationError as exc:
            raise InvalidInput(workflow.id, violations_from(exc, "input_data")) from exc
        try:
            state = schema.normalize(workflow.state_schema, cmd.initial_state or {})
        except ValidationError as exc:
            raise InvalidInput(workflow.id, violations_from(exc, "initial_state")) from exc
        existing = await self.store.load_run(cmd.run_id) if cmd.run_id else None
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
            await self._insert(run, key)
            return run
        if existing.workflow_id != workflow.id or existing.status is not RunStatus.PENDING:
            raise RunAlreadyExists(existing.run_id, existing.status)
        expected = existing.version
        existing.version += 1
        existing.status, existing.input, existing.state = RunStatus.RUNNING, input_json, state
        existing.request_context = dict(cmd.request_context)
        existing.resource_id = existing.resource_id or cmd.resource_id
        try:
            await self.store.commit(Commit(existing, expected, new_request=key))
        except StoreConflict:
            raise RunAlreadyExists(existing.run_id, "running") from None
        return existing

    async def resume_run(self, cmd: ResumeCommand) -> WorkflowResultData:
        run = await self._existing_run(cmd.run_id, cmd.workflow_id)
        key = RequestKey(f"resume:{run.run_id}", cmd.request_id) if cmd.request_id else None
        if key and (seen := await self.store.get_request(key)):
            return await self._replay(seen)
        snapshot = await self._wait_suspended(run)
        run = snapshot.run
        if cmd.expected_version is not None and cmd.expected_version != run.version:
            raise VersionMismatch(run.run_id, cmd.expected_version, run.version)
        workflow = self.workflow(run.workflow_id)
        path = resolve_path(workflow, snapshot, cmd.step, cmd.label, cmd.foreach_index)
        target = ResumeTarget(
            path, validate_resume_data(workflow, run.run_id, path, cmd.resume_data)
        )
        if cmd.validate_only:
            return build_result(workflow, run, snapshot.steps)
        await self._claim(snapshot, target, cmd, key)
        task = self._launch(Execution(self.store, workflow, snapshot, [key] if key else []))
        return await asyncio.shield(task)

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
        expected = run.version
        records = claimed_records(snapshot, target, cmd.retry_count)
        run.version += 1
        run.status = RunStatus.RUNNING
        run.resume_count += 1
        run.request_context = merge_context(run.request_context, cmd.request_context)
        try:
            await self.store.commit(
                Commit(
                    run, expected, {format_path(p): r for p, r in records.items()}, new_request=key
                )
            )
        except StoreConflict:
            now_run = await self.store.load_run(run.run_id)
            raise ResumeConflict(run.run_id, now_run.status if now_run else "deleted") from None
        snapshot.steps.update(records)

    async def _wait_suspended(self, run: RunRecord) -> RunSnapshot:
        """The run's snapshot once it is SUSPENDED. A run still RUNNING from its start is
        given a short grace to reach its first suspension (as Mastra does); a run RUNNING
        because another resume claimed it is a conflict at once."""
        deadline = asyncio.get_running_loop().time() + self._resume_grace
        while True:
            if run.status is RunStatus.SUSPENDED:
                snapshot = await self.store.load(run.run_id)
                if snapshot is not None and snapshot.run.status is RunStatus.SUSPENDED:
                    return snapshot
            elif run.status is RunStatus.RUNNING and run.resume_count > 0:
                raise ResumeConflict(run.run_id, run.status)
            elif run.status is not RunStatus.RUNNING or (
                asyncio.get_running_loop().time() >= deadline
            ):
                raise RunNotSuspended(run.run_id, run.status)
            else:
                await asyncio.sleep(0.025)
            run = await self._existing_run(run.run_id)

    async def _replay(self, seen: RequestRecord) -> WorkflowResultData:
        """The first call's outcome for a repeated request id."""
        if seen.outcome is not None:
            return WorkflowResultData.from_json(seen.outcome)
        active = self._active.get(seen.run_id)
        if active is not None:
            return await asyncio.shield(active[1])
        return (await self.get_run(seen.run_id))[1]

    async def cancel_run(self, run_id: str, reason: str = "") -> WorkflowResultData:
        """Cancel a run; a no-op on a finished one."""
        while True:
            run = await self._existing_run(run_id)
            if run.status.is_final:
                return (await self.get_run(run_id))[1]
            active = self._active.get(run_id)
            if active is not None and run.status is RunStatus.RUNNING:
                active[1].cancel(reason or "canceled")
                try:
                    return await asyncio.shield(active[1])
                except asyncio.CancelledError:
                    continue
            expected = run.version
            run.version, run.status = run.version + 1, RunStatus.CANCELED
            run.error = error_json("CANCELED", reason or "run canceled")
            try:
                await self.store.commit(Commit(run, expected))
            except StoreConflict:
                continue
            return (await self.get_run(run_id))[1]

    async def get_run(self, run_id: str) -> tuple[RunRecord, WorkflowResultData]:
        if not run_id:
            raise InvalidArgument("run_id", "required")
        snapshot = await self.store.load(run_id)
        if snapshot is None:
            raise RunNotFound(run_id)
        workflow = self._workflows.get(snapshot.run.workflow_id)
        return snapshot.run, build_result(workflow, snapshot.run, snapshot.steps)

    async def _existing_run(self, run_id: str, workflow_id: str = "") -> RunRecord:
        if not run_id:
            raise InvalidArgument("run_id", "required")
        run = await self.store.load_run(run_id)
        if run is None or (workflow_id and run.workflow_id != workflow_id):
            raise RunNotFound(run_id, workflow_id)
        return run

    async def list_runs(
        self, where: RunFilter, page_size: int, page_token: str
    ) -> tuple[list[RunRecord], str]:
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token, where) if page_token else None
        runs = await self.store.list_runs(where, limit + 1, after)
        if len(runs) <= limit:
            return runs, ""
        last = runs[limit - 1]
        return runs[:limit], _encode_token(Cursor(last.create_time, last.run_id), where)


def _run_id(requested: str) -> str:
    if not requested:
        return str(uuid.uuid4())
    if not RUN_ID.fullmatch(requested):
        raise InvalidArgument("run_id", "must be 1-200 characters of A-Z a-z 0-9 . _ : -")
    return requested


def _fingerprint(where: RunFilter) -> str:
    text = json.dumps(
        [
            where.workflow_id,
            sorted(s.value for s in where.statuses),
            where.resource_id,
            where.created_after,
            where.created_before,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_token(cursor: Cursor, where: RunFilter) -> str:
    raw = json.dumps({"t": cursor.create_time, "r": cursor.run_id, "f": _fingerprint(where)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, where: RunFilter) -> Cursor:
    try:
        raw: Any = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = Cursor(float(raw["t"]), str(raw["r"]))
        fingerprint = raw["f"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token", "malformed page token") from exc
    if fingerprint != _fingerprint(where):
        raise InvalidArgument("page_token", "the page token belongs to other filters")
    return cursor
