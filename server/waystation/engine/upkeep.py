"""The engine's upkeep: leases, takeover of runs whose driver died, suspension timeouts.

A mixin of `Engine`, kept apart so that the request paths in `engine.py` stay readable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from waystation.engine.commands import ResumeCommand
from waystation.engine.definition import Workflow
from waystation.engine.drift import check_fits
from waystation.engine.errors import (
    ResumeConflict,
    RunNotSuspended,
    StepNotSuspended,
    WorkflowChanged,
)
from waystation.engine.events import settle_events
from waystation.engine.executor import Execution, error_json
from waystation.engine.model import (
    RunRecord,
    RunSnapshot,
    RunStatus,
    StepRecord,
    StepStatus,
    ended,
    evolve,
    now,
    stop_unfinished,
)
from waystation.engine.paths import Path, enclosing, format_path, shown, split_items
from waystation.engine.result import WorkflowResultData, build_result, suspended_records
from waystation.storage.protocol import (
    Commit,
    SnapshotStore,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from waystation.engine.engine import Recovery

log = logging.getLogger("waystation.engine")


TIMEOUT = "timeout"
"""The actor of a resume the timeout of a suspension made (a step's `resumed_by`)."""
Asleep = tuple[Execution, "asyncio.Task[WorkflowResultData]", "WorkflowResultData | None"]
"""An execution here that sleeps in a WAITING run, its task, and the result its callers are
to be told if it has not told them yet (see `Engine._asleep_here`)."""
UNACTED_RETRY = 60.0
"""Seconds before a deadline that could not be acted on (the workflow changed under the
run) is tried again: a deploy of the workflow as it was lets it act."""


class Trouble:
    """The log of a background duty that runs every fraction of a second: one line when it
    starts failing (a warning for a database that is down, the traceback for anything
    else) and one when it works again, not a traceback every round of an outage."""

    def __init__(self, duty: str) -> None:
        self.duty = duty
        self.failing = False

    def failed(self, exc: BaseException) -> None:
        if self.failing:
            return
        self.failing = True
        if isinstance(exc, StoreError):
            log.warning("%s failed, retrying (said once until it works): %s", self.duty, exc)
        else:
            log.error("%s failed, retrying (said once until it works)", self.duty, exc_info=exc)

    def worked(self) -> None:
        if self.failing:
            self.failing = False
            log.info("%s works again", self.duty)


class Upkeep:
    """Background duties of a replica; see `Engine.start`."""

    store: SnapshotStore
    replica_id: str
    lease_seconds: float
    _workflows: dict[str, Workflow]
    _recovery: Recovery
    _active: dict[str, tuple[Execution, asyncio.Task[WorkflowResultData]]]

    def _launch(self, execution: Execution) -> asyncio.Task[WorkflowResultData]:
        raise NotImplementedError

    def _release(self, run: RunRecord) -> None:
        raise NotImplementedError

    def _notify(self, run_id: str) -> None:
        raise NotImplementedError

    async def _accept_resume(self, cmd: ResumeCommand) -> Any:
        raise NotImplementedError

    def _asleep_here(self, workflow: Workflow, snapshot: RunSnapshot) -> Asleep | None:
        raise NotImplementedError

    def _supersede(self, asleep: Asleep) -> None:
        raise NotImplementedError

    on_store_health: Callable[[bool], None]
    """Told after each round of the lease upkeep whether the store took its writes (False
    only when it failed with StoreUnavailable); the transport's health service follows it."""
    _stalled: set[str]
    _unacted: set[str]
    """Suspended runs whose deadline passed that `_expire` could not act on: passed over
    until the next retry (every UNACTED_RETRY seconds)."""
    _told: set[str]

    async def _revive(self, run_id: str) -> None:
        raise NotImplementedError

    async def _take_over(self, expired_before: float) -> int:
        run_ids = await self.store.claim_expired(
            self.replica_id, expired_before, now() + self.lease_seconds, limit=10_000
        )
        for run_id in run_ids:
            snapshot = await self.store.load(run_id)
            if (
                snapshot is None
                or run_id in self._active
                or snapshot.run.status
                not in (
                    RunStatus.RUNNING,
                    RunStatus.WAITING,
                )
            ):
                continue
            workflow = self._workflows.get(snapshot.run.workflow_id)
            waiting = snapshot.run.status is RunStatus.WAITING
            if workflow is None or (self._recovery == "fail" and not waiting):
                await self._fail_interrupted(snapshot, workflow)
                continue
            try:
                check_fits(workflow, snapshot)
            except WorkflowChanged as exc:  # it waits (the lease lapses) for a deploy that fits
                self._tell_once(run_id, f"run {run_id} cannot go on here: {exc.message}")
            else:
                log.info("continuing run %s (its driver stopped)", run_id)
                self._launch(Execution(self.store, workflow, snapshot))
        return len(run_ids)

    async def _keep_leases(self) -> None:
        """Renew the leases of our executions; take over runs whose lease expired."""
        trouble = Trouble("lease upkeep")
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                until = now() + self.lease_seconds
                sent = {rid: ex for rid, (ex, _) in self._active.items() if ex.stored}
                renewed = await self.store.renew_leases(self.replica_id, list(sent), until)
                self._stop_lost(sent, set(renewed))
                for run_id in list(self._stalled):  # the store works again
                    await self._revive(run_id)
                # The executions' copies too: their commits write the lease they hold (and
                # move it only once half of it is gone), so they must not write it back.
                for execution, _ in self._active.values():
                    run = execution.snapshot.run
                    run.lease_until = max(run.lease_until or 0.0, until)
                await self._take_over(now())
            except Exception as exc:  # the store may be briefly unavailable: try again
                trouble.failed(exc)
                if isinstance(exc, StoreUnavailable):
                    self.on_store_health(False)
            else:
                trouble.worked()
                self.on_store_health(True)

    def _stop_lost(self, sent: dict[str, Execution], renewed: set[str]) -> None:
        """Stop the executions whose run the renewal found no longer ours: another replica
        canceled it or took it over. Their step is interrupted now, not when its next
        commit would fail, and they write nothing more (`Execution.lost`)."""
        for run_id, execution in sent.items():
            active = self._active.get(run_id)
            run = execution.snapshot.run
            if run_id in renewed or active is None or active[0] is not execution:
                continue
            if run.owner != self.replica_id or run.status not in (
                RunStatus.RUNNING,
                RunStatus.WAITING,
            ):
                continue  # settling: its own commit released the lease
            log.warning("run %s is no longer this replica's: stopping its execution", run_id)
            execution.lost = True
            active[1].cancel()

    async def _expire_suspensions(self, interval: float = 0.25) -> None:
        """Act on suspensions whose timeout passed: fail the run, or resume the step once
        with its default data. Both are compare-and-set, so exactly one replica acts, and a
        restart picks up what a dead process left (the run is still SUSPENDED and due)."""
        trouble = Trouble("suspension timeouts")
        again = now() + UNACTED_RETRY
        while True:
            await asyncio.sleep(interval)
            if now() >= again:  # a deploy may have made them actionable again
                self._unacted.clear()
                again = now() + UNACTED_RETRY
            try:
                # Runs it could not act on are passed over, and do not take the others' places.
                due = await self.store.due_runs(now(), limit=100 + len(self._unacted))
                for run_id in due:
                    if run_id not in self._unacted:
                        await self._expire(run_id)
            except Exception as exc:  # a conflict or a store hiccup: the next round retries
                trouble.failed(exc)
            else:
                trouble.worked()

    async def _expire(self, run_id: str) -> None:
        """Act on the suspensions of `run_id` whose timeout passed: in a SUSPENDED run no
        continuation drives (one that does is settling), or in a WAITING one, suspended
        beside a branch that sleeps."""
        snapshot = await self.store.load(run_id)
        if snapshot is None or not (
            snapshot.run.status is RunStatus.WAITING
            or (snapshot.run.status is RunStatus.SUSPENDED and run_id not in self._active)
        ):
            return
        workflow = self._workflows.get(snapshot.run.workflow_id)
        if workflow is None:
            self._cannot_act(run_id, f"workflow {snapshot.run.workflow_id!r} is not served here")
            return
        moment = now()
        for path in suspended_records(workflow, snapshot.steps):
            record = snapshot.steps[path]
            if record.metadata.get("expires_at", moment + 1) > moment:
                continue
            action = record.metadata.get("on_timeout", "fail")
            api, index = split_items(path)
            try:
                if action == "fail":
                    await self._time_out(snapshot, workflow, path)
                else:
                    cmd = ResumeCommand(
                        run_id,
                        step=api,
                        foreach_index=index,
                        resume_data=action["data"],
                        actor=TIMEOUT,
                    )
                    await self._accept_resume(cmd)  # the continuation runs on its own
            except (StoreConflict, ResumeConflict, RunNotSuspended, StepNotSuspended):
                pass  # another replica (or a caller) got there first
            except WorkflowChanged as exc:  # not the round's failure: the other runs go on
                self._cannot_act(run_id, exc.message)
            return
        # Due, but no suspended step of the workflow as deployed has a deadline that passed.
        self._cannot_act(run_id, "the step whose deadline passed is not in its workflow")

    def _cannot_act(self, run_id: str, why: str) -> None:
        """A suspension's deadline passed and cannot be acted on under the workflows served
        here (a deploy changed them): the run waits, passed over until the next retry."""
        self._tell_once(
            run_id,
            f"run {run_id}: a suspension's deadline passed, but it cannot be acted on ({why});"
            f" trying again every {UNACTED_RETRY:.0f} s",
        )
        self._unacted.add(run_id)

    def _tell_once(self, run_id: str, text: str) -> None:
        """Warn of a run that a deploy left unable to go on, once per process."""
        if run_id not in self._told:
            self._told.add(run_id)
            log.warning("%s", text)

    async def _time_out(self, snapshot: RunSnapshot, workflow: Workflow, path: Path) -> None:
        """A suspension expired with on_timeout="fail": the step fails, and with it the
        nested workflows and the foreach around it, and the run."""
        run = snapshot.run
        asleep = self._asleep_here(workflow, snapshot)  # a WAITING run's sleep, if here
        expected = run.advance()
        run.status, run.due_at = RunStatus.FAILED, None
        self._release(run)  # (a replica that slept in a WAITING run stops: its lease is gone)
        run.error = error_json(
            "RESUME_TIMEOUT",
            f"step {shown(path)} was not resumed before its deadline",
            path,
        )
        failed = {
            p: ended(snapshot.steps[p], StepStatus.FAILED, error=run.error)
            for p in (*enclosing(path), path)
            if p == path or p in snapshot.steps
        }
        await self._settle_failed(snapshot, workflow, expected, failed)
        if asleep is not None:
            self._supersede(asleep)
        self._notify(run.run_id)

    async def _fail_interrupted(self, snapshot: RunSnapshot, workflow: Workflow | None) -> None:
        """`--recovery fail`, or a run of a workflow this server does not serve: the run,
        and each step it was running, ends FAILED."""
        run = snapshot.run
        expected = run.advance()
        run.status = RunStatus.FAILED
        run.error = error_json("RUN_INTERRUPTED", "the process driving this run stopped")
        if workflow is None:  # whatever --recovery says: there is nothing to go on with
            log.warning(
                "run %s is of workflow %r, which this server does not serve: it ends FAILED",
                run.run_id,
                run.workflow_id,
            )
            run.error = error_json(
                "WORKFLOW_NOT_FOUND",
                f"the process that took the run over does not serve workflow {run.workflow_id!r}"
                " (it is in none of its --workflows modules)",
            )
        self._release(run)
        interrupted = {
            path: ended(record, StepStatus.FAILED, error=run.error)
            for path, record in snapshot.steps.items()
            if record.status in (StepStatus.RUNNING, StepStatus.WAITING)
        }
        await self._settle_failed(snapshot, workflow, expected, interrupted)

    async def _settle_failed(
        self,
        snapshot: RunSnapshot,
        workflow: Workflow | None,
        expected: int,
        failed: dict[Path, StepRecord],
    ) -> None:
        """Commit a run that ended FAILED with the step records that `failed`; any other
        step left unfinished (a suspended sibling) ends CANCELED, and every step's event
        comes before RUN_SETTLED."""
        run = snapshot.run
        before = dict(snapshot.steps)
        snapshot.steps.update(failed)
        changed = {**stop_unfinished(snapshot), **failed}
        snapshot.steps.update(changed)
        result = build_result(workflow, evolve(run), snapshot.steps)
        events = settle_events(run, before, changed, result.to_json())
        records = {format_path(p): r for p, r in changed.items()}
        await self.store.commit(Commit(run, expected, records, events=events))
