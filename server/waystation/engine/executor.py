"""Drives one execution of a run (a start, a resume, a recovery) until it settles.

The executor walks the workflow from the top every time and lets the step records decide:
a SUCCESS record is skipped (its stored output is used), a SUSPENDED record stays suspended,
anything else runs. A resume's claim has already marked the resumed step (and the nested
workflows, loops and foreach steps around it) RUNNING with the resume data, so resuming,
recovering after a crash and starting are the same walk, and a completed step never runs
again. Every transition is committed before the run moves on; a step's end rides with the
next commit (the next step's start, the settle) when only the engine runs in between
(`Execution.hold`), so a sequence costs one commit per step.

The shapes (`.parallel`, `.branch`, loops, `.foreach`, `.sleep`) live in `blocks.py`; this
module holds the walk, single steps, nested workflows and persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import traceback
from collections.abc import Callable, Container, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import ValidationError

from waystation.engine import schema
from waystation.engine.context import (
    AbortSignal,
    BailSignal,
    InvalidState,
    RunScope,
    StepContext,
    SuspendSignal,
)
from waystation.engine.definition import Entry, RetryConfig, Step, Workflow
from waystation.engine.errors import (
    NO_DATA,
    USER_FAILURES,
    RunAlreadyExists,
    exception_text,
    violations_from,
)
from waystation.engine.events import EventType, make_event, step_events
from waystation.engine.model import (
    JSON,
    LabelTarget,
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
from waystation.engine.paths import Path, format_path, is_prefix, shown, split_items
from waystation.engine.result import WorkflowResultData, build_result
from waystation.engine.tracing import CallTrace, Telemetry, finish, ids_of
from waystation.storage.protocol import (
    Commit,
    RequestKey,
    SnapshotStore,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

DEFAULT_TELEMETRY = Telemetry()
"""For executions not launched by an Engine (which passes its own). One instance: every
`Telemetry` registers its instruments with the meter provider, which keeps them."""

Kind = Literal["success", "suspended", "failed", "bailed", "canceled", "waiting"]


async def insert_run(
    store: SnapshotStore,
    run: RunRecord,
    key: RequestKey | None,
    events: list[dict[str, Any]],
    durable: bool,
    steps: dict[str, StepRecord] | None = None,
    outcome: dict[str, Any] | None = None,
) -> None:
    """Store a new run; RunAlreadyExists if its id or its request key is taken."""
    try:
        await store.create_run(run, key, events, durable=durable, steps=steps, outcome=outcome)
    except StoreConflict:
        existing = await store.load_run(run.run_id)
        raise RunAlreadyExists(run.run_id, existing.status if existing else "unknown") from None


@dataclass
class Outcome:
    kind: Kind
    output: JSON = None
    error: dict[str, Any] | None = None


SEVERITY: dict[Kind, int] = {
    "failed": 5,
    "canceled": 4,
    "bailed": 3,
    "suspended": 2,
    "waiting": 1,
    "success": 0,
}


def combine(outcomes: list[Outcome], ids: list[str]) -> Outcome:
    """The outcome of a block of concurrent steps: the most severe one wins (failed over
    canceled over bailed over suspended); all successes give `{id: output}`."""
    worst = max(outcomes, key=lambda o: SEVERITY[o.kind], default=Outcome("success"))
    if worst.kind != "success":
        return worst
    return Outcome("success", {i: o.output for i, o in zip(ids, outcomes, strict=True)})


def error_json(
    reason: str, message: str, path: Path = (), exc: BaseException | None = None, **details: Any
) -> dict[str, Any]:
    """A stored error (the API's RunError)."""
    out: dict[str, Any] = {"reason": reason, "message": message, "step": list(split_items(path)[0])}
    if exc is not None:
        out["type"] = type(exc).__name__
    if details:
        out["details"] = details
    return out


def _expiry(step: Step, signal: SuspendSignal) -> dict[str, Any]:
    """The bookkeeping of a suspension with a timeout: when it expires, and what then."""
    if signal.timeout is None:
        return {}
    if signal.on_timeout == "fail":
        action: Any = "fail"
    else:
        action = {
            "data": schema.dump(
                None, schema.normalize(step.resume_schema, schema.dump(None, signal.on_timeout))
            )
        }
    return {"expires_at": now() + signal.timeout, "on_timeout": action}


def _invalid(reason: str, what: str, path: Path, exc: Exception) -> dict[str, Any]:
    """The error of a step whose output or suspend payload its schema refused (one violation
    per problem), or that JSON cannot hold."""
    message = f"{what} of step {shown(path)} is invalid"
    if isinstance(exc, ValidationError):
        return error_json(reason, message, path, exc, violations=validation_details(exc))
    return error_json(reason, f"{message}: {exc}", path, exc)


def validation_details(exc: ValidationError, data: Any = NO_DATA) -> list[dict[str, str]]:
    """A pydantic error's violations as a run's error details (`data`: what was validated,
    when it is JSON)."""
    return [
        {"field": v.field, "description": v.description} for v in violations_from(exc, "", data)
    ]


_HOLD: contextvars.ContextVar[Literal["", "end", "success"]] = contextvars.ContextVar(
    "waystation_hold", default=""
)
"""What the step being run by a sequence may hold for the next commit instead of committing
it at once (see Execution.hold): "success" when another plain step follows it in the same
sequence, or it is the last entry of the run's workflow; "end" when only a suspension may
be held (whatever follows it, the sequence ends there); "" when nothing may be (steps of
parallel, branch, loop and foreach blocks, whose siblings run on)."""


class RunChanged(StoreConflict):
    """Another writer changed the run under an execution (another replica canceled it or
    took it over): this process stops driving it, and its callers get the run's outcome
    from the store (`Engine._outcome`)."""

    reason = "RUN_CHANGED"

    def __init__(self, run_id: str, message: str, born: float) -> None:
        """`born`: the create_time of the run the execution drove (another run may have
        its id by now, if it was deleted)."""
        super().__init__(message, run_id)
        self.born = born


def outcome_record(record: StepRecord, status: StepStatus, error: JSON) -> StepRecord:
    """The record of a nested workflow or a foreach as its members left it: ended (with
    `ended_at`) when they failed or were canceled, else suspended or still running."""
    over = status in (StepStatus.FAILED, StepStatus.CANCELED)
    return evolve(record, status=status, error=error, **({"ended_at": now()} if over else {}))


@dataclass
class Execution:
    store: SnapshotStore
    workflow: Workflow
    snapshot: RunSnapshot
    requests: list[RequestKey] = field(default_factory=list)
    shutting_down: bool = False
    lost: bool = False
    """Set (before the task is cancelled) when the lease upkeep finds the run is no longer
    this replica's: nothing more is written, the execution ends with RunChanged."""
    on_commit: Callable[[str], None] = lambda run_id: None
    telemetry: Telemetry = field(default_factory=lambda: DEFAULT_TELEMETRY)
    kind: str = "recover"
    """What started this execution: start, resume, restart, time_travel or recover."""
    call: CallTrace | None = None
    link_to: dict[str, str] = field(default_factory=dict)
    lease_seconds: float = 15.0
    span: Span | None = None
    """The trace context stored when the run last settled (a resume links back to it)."""
    pending_events: list[dict[str, Any]] = field(default_factory=list)
    held: dict[Path, StepRecord] = field(default_factory=dict)
    """Step records of transitions that ride with the next commit (see `hold`)."""
    strands: int = 1
    """Branches of the run going on at once (parallel members, foreach items), each at work
    or asleep: the run is WAITING when every one of them sleeps (`sleeping`)."""
    sleeping: dict[Path, float] = field(default_factory=dict)
    """The durable sleeps going on, by path, and when each wakes."""
    _held_run: RunRecord | None = None
    _last_error: dict[str, Any] = field(default_factory=dict)
    stored: bool = True
    """False for a start whose run is not in the store yet: its first commit, the first
    step's RUNNING record, inserts it (with `requests` and the held events), so that the
    insert and that record are one transaction; no user code runs before either. A run id
    or request id already taken then fails the execution with RunAlreadyExists."""
    on_stored: Callable[[], None] = lambda: None
    """Called once the first commit of an execution that was not `stored` has landed."""
    on_waiting: Callable[[WorkflowResultData], None] = lambda result: None
    """Called with the run's result once it is WAITING on a durable sleep (committed and
    fsynced): the run has settled for now, and a caller waiting for it is answered."""

    async def together(self, branches: list[Coroutine[Any, Any, Outcome]]) -> list[Outcome]:
        """Run `branches` at once, each a strand of its own. One that ends while every
        other strand sleeps leaves the run WAITING: it was RUNNING until a sleeper woke, so
        a crash then failed its sleep under `--recovery fail`, and ListRuns of WAITING runs
        missed it."""
        left = len(branches)

        async def strand(branch: Coroutine[Any, Any, Outcome]) -> Outcome:
            nonlocal left
            try:
                outcome = await branch
            finally:
                self.strands -= 1
                left -= 1
            if left:  # (after the last one, the strand that started them goes on)
                await self.settle_asleep({})
            return outcome

        self.strands += len(branches) - 1
        try:
            return list(await asyncio.gather(*(strand(b) for b in branches)))
        finally:
            self.strands += 1

    async def settle_asleep(self, steps: dict[Path, StepRecord]) -> bool:
        """If every strand of the run sleeps: commit `steps` with the run WAITING (until the
        first sleeper wakes), durably, with its RUN_SETTLED event, answer the callers waiting
        for the run, and say so."""
        if not self.sleeping or self.strands != len(self.sleeping):
            return False
        run = self.snapshot.run
        if steps or run.status is not RunStatus.WAITING:
            settling = run.status is not RunStatus.WAITING
            run.status, run.wake_at = RunStatus.WAITING, min(self.sleeping.values())
            run.due_at = self._due_at()  # a step suspended beside the sleep may time out
            settled, outcomes = [], {}
            if settling:  # (a sleep that begins while the run is WAITING settles nothing)
                # The steps' events first, in sequence (the commit finds nothing new in them).
                self.pending_events += step_events(run, self.snapshot.steps, steps)
                self.snapshot.steps.update(steps)
                as_settled = evolve(run, version=run.version + 1)
                result = build_result(self.workflow, as_settled, self.snapshot.steps)
                outcome = result.to_json()
                settled.append(make_event(run, EventType.RUN_SETTLED, result=outcome))
                # The callers are answered WAITING now: a retry of theirs gets this answer.
                outcomes = {key: outcome for key in self.requests}
            await self.commit(steps, durable=True, extra_events=settled, settled_requests=outcomes)
            if settling:
                self.requests = []
                self.on_waiting(result)
                return True
        self.tell_waiting()
        return True

    def tell_waiting(self) -> None:
        """Answer the callers waiting for the run: it is WAITING, as committed."""
        run = evolve(self.snapshot.run, resume_labels=self.snapshot.run.resume_labels.copy())
        self.on_waiting(build_result(self.workflow, run, dict(self.snapshot.steps)))

    @property
    def run_id(self) -> str:
        return self.snapshot.run.run_id

    async def drive(self) -> WorkflowResultData:
        """Execute until the run settles, commit the settled state, return the result."""
        from waystation.engine.blocks import run_entry

        run = self.snapshot.run
        span = self.span or self.start_span()
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                outcome = await self.sequence(self.workflow, (), run.input, run_entry)
            except asyncio.CancelledError as exc:
                if self.shutting_down:
                    raise  # the run stays RUNNING; the next process continues it
                if self.lost:
                    raise RunChanged(
                        self.run_id, "another replica changed the run", run.create_time
                    ) from None
                reason = str(exc.args[0]) if exc.args else "run canceled"
                outcome = Outcome("canceled", error=error_json("CANCELED", reason))
            except StoreError:
                raise  # nothing more can be written; a takeover continues the run later
            except RunAlreadyExists as exc:  # its first commit found the id taken
                finish(span, "already_exists", str(exc))
                raise  # this run never existed; the caller answers ALREADY_EXISTS
            except USER_FAILURES as exc:  # an engine bug must not leave a run RUNNING forever
                log.exception("run %s failed inside the engine", self.run_id)
                outcome = Outcome(
                    "failed",
                    error=error_json(
                        "INTERNAL", "the engine failed; the server log has the details", (), exc
                    ),
                )
            result = await self._settle(outcome)
            finish(span, result.status.value, (result.error or {}).get("message"))
            self.telemetry.runs_settled.add(1, {"waystation.status": result.status.value})
            return result

    def start_span(self) -> Span:
        """Start this execution's run span now (so its ids are known before it runs)."""
        self.span = self.telemetry.start_run_span(
            self.kind, self.snapshot.run, self.call, self.link_to
        )
        self.snapshot.run.trace = ids_of(self.span)
        return self.span

    # -- persistence ----------------------------------------------------------------------

    async def commit(
        self,
        steps: dict[Path, StepRecord],
        *,
        deleted: list[Path] | None = None,
        extra_events: list[dict[str, Any]] | None = None,
        durable: bool = False,
        settled_requests: dict[RequestKey, dict[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        """Commit a transition: the header as it is now, the held records, and the records
        in `steps`.

        Committed before the run moves on, so a process that dies loses nothing; fsynced
        only when `durable`, for the transition a caller is answered after (the settle):
        the fsync carries every earlier commit of the run to the disk with it."""
        held = self.held
        if held:
            steps, self.held = {**held, **steps}, {}
        run = self.snapshot.run
        before = self.pending_events
        events = before + step_events(run, self.snapshot.steps, steps)
        events += extra_events or []
        self.pending_events = []
        for prefix in deleted or []:
            for path in [p for p in self.snapshot.steps if p[: len(prefix)] == prefix]:
                del self.snapshot.steps[path]
        self.snapshot.steps.update(steps)
        expected = run.advance()  # before the await: a commit whose waiter is cancelled lands
        if run.status in (RunStatus.RUNNING, RunStatus.WAITING):
            # Extended once half of it is gone, not on every commit: the lease is an indexed
            # column, and moving it rewrites an index page (the upkeep renews leases every
            # third of their length meanwhile).
            left = (run.lease_until or 0.0) - run.update_time
            if left < self.lease_seconds / 2:
                run.lease_until = run.update_time + self.lease_seconds
        else:
            run.owner, run.lease_until = "", None
        records = {format_path(p): r for p, r in steps.items()}
        try:
            if not self.stored:
                assert not deleted and not extra, "a run's first commit is a step's start"
                await self._insert(records, events, durable, settled_requests or {})
            else:
                await self.store.commit(
                    Commit(
                        run,
                        expected,
                        records,
                        deleted_prefixes=[format_path(p) for p in deleted or []],
                        events=events,
                        durable=durable,
                        settled_requests=settled_requests or {},
                        **extra,
                    )
                )
        except StoreUnavailable as exc:
            if held:
                await self._save_held(held, expected, before)
            exc.metadata["run_id"] = run.run_id  # the call may have created or claimed it
            raise
        except StoreConflict as exc:
            raise RunChanged(run.run_id, str(exc), run.create_time) from None
        self.on_commit(run.run_id)

    async def _insert(
        self,
        records: dict[str, StepRecord],
        events: list[dict[str, Any]],
        durable: bool,
        outcomes: dict[RequestKey, dict[str, Any]],
    ) -> None:
        key = self.requests[0] if self.requests else None
        outcome = outcomes.get(key) if key is not None else None
        await insert_run(self.store, self.snapshot.run, key, events, durable, records, outcome)
        self.stored = True
        self.on_stored()

    async def _save_held(
        self, held: dict[Path, StepRecord], expected: int, events: list[dict[str, Any]]
    ) -> None:
        """The commit that carried held records failed: try to write them on their own, with
        the header as it was when they were held, so that a step that finished is not run
        again when the run is continued (the caller still gets the failure). If the store
        refuses this too, the run continues from its last commit, as after a crash."""
        assert self._held_run is not None
        run = evolve(self._held_run, version=expected + 1, update_time=now())
        run.lease_until = run.update_time + self.lease_seconds
        records = {format_path(p): r for p, r in held.items()}
        with contextlib.suppress(StoreError):
            await self.store.commit(Commit(run, expected, records, events=events, durable=False))

    def hold(self, steps: dict[Path, StepRecord]) -> None:
        """Record a transition now, and write it with the next commit instead of a commit
        of its own: for a step's end when the next thing the run does is a commit with no
        user code before it (the next step's RUNNING record, the settle, a nested
        workflow's record), so the transition is still committed before the run moves on.
        Its events are made now, in order."""
        run = self.snapshot.run
        self.pending_events += step_events(run, self.snapshot.steps, steps)
        self.snapshot.steps.update(steps)
        self.held.update(steps)
        # The header as it is now, for `_save_held` (labels change in place).
        self._held_run = evolve(run, resume_labels=run.resume_labels.copy())

    async def flush(self) -> None:
        """Commit the held records now: before user code runs, nothing may be held."""
        if self.held:
            await self.commit({})

    def _due_at(self) -> float | None:
        """When the first timeout of a suspended step passes (the upkeep acts on it then)."""
        return min(
            (
                r.metadata["expires_at"]
                for r in self.snapshot.steps.values()
                if r.status is StepStatus.SUSPENDED and "expires_at" in r.metadata
            ),
            default=None,
        )

    async def _settle(self, outcome: Outcome) -> WorkflowResultData:
        run = self.snapshot.run
        stopped: dict[Path, StepRecord] = {}
        if outcome.kind in ("canceled", "failed"):
            # A cancel can land between two commits of a step, a failure leave a sibling
            # suspended: nothing is left running, waiting or suspended.
            stopped = stop_unfinished(self.snapshot)
        elif outcome.kind == "bailed":
            stopped = self._abandoned(())
        # Their events before RUN_SETTLED, in sequence (the commit finds nothing new in them).
        self.pending_events += step_events(run, self.snapshot.steps, stopped)
        self.snapshot.steps.update(stopped)
        run.status = {
            "success": RunStatus.SUCCESS,
            "bailed": RunStatus.SUCCESS,
            "suspended": RunStatus.SUSPENDED,
            "failed": RunStatus.FAILED,
            "canceled": RunStatus.CANCELED,
            "waiting": RunStatus.WAITING,
        }[outcome.kind]
        run.result = outcome.output if run.status is RunStatus.SUCCESS else None
        run.error = outcome.error if outcome.kind in ("failed", "canceled") else None
        run.wake_at = None
        run.due_at = self._due_at() if run.status is RunStatus.SUSPENDED else None
        result = build_result(
            self.workflow, evolve(run, version=run.version + 1), self.snapshot.steps
        )
        outcome_json = result.to_json()
        settled = make_event(run, EventType.RUN_SETTLED, result=outcome_json)
        await self.commit(
            stopped,
            extra_events=[settled],
            settled_requests={key: outcome_json for key in self.requests},
            durable=True,
        )
        return result

    # -- the walk -------------------------------------------------------------------------

    async def sequence(
        self, workflow: Workflow, prefix: Path, input_json: JSON, run_entry: Any
    ) -> Outcome:
        """Run a workflow's entries in order, each on the previous output."""
        value = input_json
        entries = workflow.entries
        for i, entry in enumerate(entries):
            token = _HOLD.set(self._may_hold(entries, i, prefix))
            try:
                outcome: Outcome = await run_entry(self, workflow, entry, prefix, value, input_json)
            finally:
                _HOLD.reset(token)
            if outcome.kind != "success":
                return outcome
            value = outcome.output
        try:
            return Outcome("success", schema.normalize(workflow.output_schema, value, stored=True))
        except ValidationError as exc:
            return Outcome(
                "failed",
                error=error_json(
                    "INVALID_WORKFLOW_OUTPUT",
                    f"workflow {workflow.id!r} output is invalid",
                    prefix,
                    exc,
                    violations=validation_details(exc, value),
                ),
            )

    @staticmethod
    def _may_hold(entries: list[Entry], i: int, prefix: Path) -> Literal["", "end", "success"]:
        """What entry `i` of a sequence may hold (see _HOLD)."""
        if not isinstance(entries[i], Step):
            return ""
        last = i + 1 == len(entries)
        if (last and prefix == ()) or (not last and isinstance(entries[i + 1], Step)):
            return "success"
        return "end"

    async def node(
        self, workflow: Workflow, node: Step | Workflow, path: Path, value: JSON, init: JSON
    ) -> Outcome:
        """Run one step or nested workflow at `path` (a record path)."""
        if isinstance(node, Workflow):
            return await self.nested(node, path, value)
        return await self.step(workflow, node, path, value, init)

    async def nested(self, workflow: Workflow, path: Path, input_json: JSON) -> Outcome:
        from waystation.engine.blocks import run_entry

        record = self.snapshot.steps.get(path)
        if record is not None and record.status is StepStatus.SUCCESS:
            return Outcome("success", record.output)
        if record is not None and record.status is StepStatus.SUSPENDED:
            return Outcome("suspended")
        if record is not None and record.status is StepStatus.FAILED:
            return Outcome("failed", error=record.error)  # see `step`
        if record is None or record.status is not StepStatus.RUNNING:
            record = StepRecord(StepStatus.RUNNING, payload=input_json, started_at=now())
            try:
                schema.normalize(workflow.input_schema, input_json, stored=True)
            except ValidationError as exc:
                return await self.fail(
                    path,
                    record,
                    error_json(
                        "INVALID_STEP_INPUT",
                        f"input of nested workflow {shown(path)} is invalid",
                        path,
                        exc,
                        violations=validation_details(exc, input_json),
                    ),
                )
            await self.commit({path: record})
        outcome = await self.sequence(workflow, path, record.payload, run_entry)
        return await self._close_nested(path, record, outcome)

    async def _close_nested(self, path: Path, record: StepRecord, outcome: Outcome) -> Outcome:
        if outcome.kind in ("success", "bailed"):
            # bail() ends the innermost workflow: its value is the nested workflow's output.
            done = evolve(record, status=StepStatus.SUCCESS, output=outcome.output, ended_at=now())
            abandoned = self._abandoned(path) if outcome.kind == "bailed" else {}
            await self.commit({**abandoned, path: done})
            return Outcome("success", outcome.output)
        status = {
            "suspended": StepStatus.SUSPENDED,
            "failed": StepStatus.FAILED,
            "canceled": StepStatus.CANCELED,
            "waiting": StepStatus.RUNNING,
        }[outcome.kind]
        await self.commit({path: outcome_record(record, status, outcome.error)})
        return outcome

    def _abandoned(self, prefix: Path) -> dict[Path, StepRecord]:
        """The records below `prefix` that a bail() leaves unfinished (a parallel sibling
        suspended or waiting, a foreach cut short), ended CANCELED, their resume labels
        dropped: a workflow that bailed holds no step still running, waiting or suspended."""
        unfinished = (StepStatus.RUNNING, StepStatus.WAITING, StepStatus.SUSPENDED)
        left = {
            p: r
            for p, r in self.snapshot.steps.items()
            if r.status in unfinished and p != prefix and is_prefix(prefix, p)
        }
        for path, record in left.items():  # as they were: ended, a record names no label
            self._drop_labels(path, record, also_ended=left)
        return {p: ended(r, StepStatus.CANCELED) for p, r in left.items()}

    async def fail(self, path: Path, record: StepRecord, error: dict[str, Any]) -> Outcome:
        """The step failed for good (and, if it had been suspended, waits no more)."""
        failed = self._ended(path, record, StepStatus.FAILED, error=error)
        await self.commit({path: failed})
        return Outcome("failed", error=error)

    async def step(
        self, workflow: Workflow, step: Step, path: Path, input_json: JSON, init: JSON
    ) -> Outcome:
        record = self.snapshot.steps.get(path)
        if record is not None and record.status is StepStatus.SUCCESS:
            return Outcome("success", record.output)
        if record is not None and record.status is StepStatus.SUSPENDED:
            return Outcome("suspended")
        if record is not None and record.status is StepStatus.FAILED:
            # It failed for good (after its retries): a run continued after a restart, while
            # a parallel sibling still slept, ran it again on every restart.
            return Outcome("failed", error=record.error)
        if record is None or record.status is not StepStatus.RUNNING:
            record = StepRecord(StepStatus.RUNNING, payload=input_json, started_at=now())
            await self.commit({path: record})
        config = (
            workflow.retry_config
            if workflow.retry_config.attempts
            else (self.workflow.retry_config)
        )
        retries = step.retries if step.retries is not None else config.attempts
        # Attempts 0 to `retries` (a resume's retry_count, or a crash, may start later on).
        last = max(record.attempt, retries)
        while True:
            outcome = await self._attempt(step, path, record, init)
            if outcome is not None:
                return outcome
            if record.attempt >= last:
                return await self.fail(path, record, self._last_error)
            # The next attempt is committed before the delay: a crash goes on from it, where
            # it began the retries again from the first attempt.
            record = evolve(record, attempt=record.attempt + 1)
            await self.commit({path: record})
            if config.delay:
                await asyncio.sleep(config.delay)

    async def _attempt(
        self, step: Step, path: Path, record: StepRecord, init: JSON
    ) -> Outcome | None:
        """One try of a step; None means it raised and may be retried."""
        try:
            input_data = schema.parse(step.input_schema, record.payload)
            ctx = self.context(step, path, record, input_data, init)
        except ValidationError as exc:  # the input, or the stored resume or suspend data
            return await self.fail(
                path,
                record,
                error_json(
                    "INVALID_STEP_INPUT",
                    f"input of step {shown(path)} is invalid",
                    path,
                    exc,
                    violations=validation_details(exc),
                ),
            )
        await self.flush()  # a no-op unless a record was already RUNNING (its commit took them)
        with self.telemetry.step_span(
            format_path(path), self.snapshot.run, record.attempt, self.span
        ) as span:
            started = time.monotonic()
            try:
                return await self._execute(step, path, record, ctx, span)
            finally:
                self.telemetry.step_duration.record(
                    time.monotonic() - started,
                    {"waystation.workflow_id": self.snapshot.run.workflow_id},
                )

    async def _execute(
        self, step: Step, path: Path, record: StepRecord, ctx: StepContext, span: Span
    ) -> Outcome | None:
        try:
            value = await step.execute(ctx)
        except SuspendSignal as signal:
            finish(span, "suspended")
            return await self._suspend(step, path, record, signal)
        except BailSignal as signal:
            finish(span, "bailed")
            await self._succeed(path, record, schema.dump(None, signal.value))
            return Outcome("bailed", schema.dump(None, signal.value))
        except AbortSignal:
            finish(span, "aborted")
            error = error_json("ABORTED", f"step {shown(path)} aborted the run", path)
            await self.commit({path: self._ended(path, record, StepStatus.CANCELED, error=error)})
            return Outcome("canceled", error=error)
        except InvalidState as exc:  # a failed attempt, as an invalid output is
            finish(span, "failed", exc)
            self._last_error = _invalid("INVALID_STATE", "state", path, exc.cause)
            return None
        except asyncio.CancelledError:
            finish(span, "canceled")
            if not (self.shutting_down or self.lost):
                await self.commit({path: self._ended(path, record, StepStatus.CANCELED)})
            raise
        except USER_FAILURES as exc:  # the step's own failure: retried, then recorded
            finish(span, "failed", exc)
            text = exception_text(exc)
            log.info(
                "step %s of run %s failed: %s: %s",
                format_path(path),
                self.run_id,
                type(exc).__name__,
                text,
            )
            self._last_error = error_json(
                "STEP_FAILED",
                text,
                path,
                exc,
                traceback="".join(traceback.format_exception(exc))[-2000:],
            )
            return None
        try:
            output = schema.dump(step.output_schema, value)
        except (ValidationError, TypeError, ValueError) as exc:  # a failed attempt too
            finish(span, "failed", exc)
            self._last_error = _invalid("INVALID_STEP_OUTPUT", "output", path, exc)
            return None
        finish(span, "success")
        await self._succeed(path, record, output)
        return Outcome("success", output)

    def context(
        self, step: Step, path: Path, record: StepRecord, input_data: Any, init: JSON
    ) -> StepContext:
        resuming = record.resumed_at is not None
        ctx = StepContext(
            self.scope(path[:-1], init),
            step,
            input_data,
            resume_data=schema.parse(step.resume_schema, record.resume_payload)
            if resuming
            else None,
            suspend_data=schema.parse(step.suspend_schema, record.suspend_payload)
            if resuming and record.suspend_payload is not None
            else None,
            retry_count=record.attempt,
        )
        ctx.foreach_index = split_items(path)[1]
        if "iteration" in record.metadata:  # the loop's body
            ctx.iteration_count = record.metadata["iteration"]
        elif len(path) > 1:
            ctx.iteration_count = self._iterations_done(path)
        return ctx

    def _iterations_done(self, path: Path) -> int:
        """The iterations done before this one of the innermost loop around the step at
        `path`, which is inside a nested workflow: that workflow's record holds them when
        it is the loop's body."""
        steps = self.snapshot.steps
        for end in range(len(path) - 1, 0, -1):
            outer = steps.get(path[:end])
            if outer is not None and "iteration" in outer.metadata:
                return int(outer.metadata["iteration"])
        return 0

    async def _succeed(self, path: Path, record: StepRecord, output: JSON) -> None:
        done = self._ended(path, record, StepStatus.SUCCESS, output=output, error=None)
        if _HOLD.get() == "success":
            self.hold({path: done})
        else:
            await self.commit({path: done})

    async def _suspend(
        self, step: Step, path: Path, record: StepRecord, signal: SuspendSignal
    ) -> Outcome | None:
        try:
            payload = schema.dump(step.suspend_schema, signal.payload)
        except (ValidationError, TypeError, ValueError) as exc:
            self._last_error = _invalid("INVALID_SUSPEND_PAYLOAD", "suspend payload", path, exc)
            return None
        try:
            expiry = _expiry(step, signal)
        except (ValidationError, TypeError, ValueError) as exc:
            self._last_error = error_json(
                "INVALID_SUSPEND_TIMEOUT",
                f"the default resume data of step {shown(path)} is invalid",
                path,
                exc,
            )
            return None
        self._drop_labels(path, record)
        for label in signal.labels:
            self.snapshot.run.resume_labels[label] = LabelTarget.of(path)
        suspended = evolve(
            record,
            status=StepStatus.SUSPENDED,
            suspend_payload=payload,
            suspended_at=now(),
            resume_labels=signal.labels,
            metadata={**record.metadata, **expiry},
        )
        if _HOLD.get():  # the sequence ends here: the settle or the nested record is next
            self.hold({path: suspended})
        else:
            await self.commit({path: suspended})
        return Outcome("suspended")

    def _ended(
        self, path: Path, record: StepRecord, status: StepStatus, **changes: Any
    ) -> StepRecord:
        """`record`, at `path`, ended with `status`: no longer suspended (`model.ended`),
        and its labels are dropped from the run's."""
        self._drop_labels(path, record)
        return ended(record, status, **changes)

    def _drop_labels(
        self, path: Path, record: StepRecord, also_ended: Container[Path] = ()
    ) -> None:
        """`record`, at `path`, waits no more: its labels go, but a label that another
        suspension was given too (not one of `also_ended`) then names that one (the latest
        to suspend, as a label names the last suspension given it): it went, and that step
        could no longer be resumed by it."""
        labels = self.snapshot.run.resume_labels
        for label in record.resume_labels:
            if label not in labels or not labels[label].names(path):
                continue
            del labels[label]
            holders = [
                (r.suspended_at or 0.0, p)
                for p, r in self.snapshot.steps.items()
                if r.status is StepStatus.SUSPENDED
                and label in r.resume_labels
                and p != path
                and p not in also_ended
            ]
            if holders:
                labels[label] = LabelTarget.of(max(holders)[1])

    def scope(self, prefix: Path, init: JSON) -> RunScope:
        run = self.snapshot.run

        def get_output(step_id: str) -> JSON:
            rec = self.snapshot.steps.get((*prefix, step_id)) or self.snapshot.steps.get((step_id,))
            return rec.output if rec is not None and rec.status is StepStatus.SUCCESS else None

        def set_state(update: dict[str, Any], step: Step | None) -> None:
            update = schema.stored_keys(self.workflow.state_schema, update)
            merged = schema.dump(None, {**run.state, **update})  # JSON, or a ValueError
            if self.workflow.state_schema is not None:
                merged = schema.normalize(self.workflow.state_schema, merged, stored=True)
            if step is not None and step.state_schema is not None:
                schema.normalize(step.state_schema, merged, stored=True)
            run.state = merged

        return RunScope(
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            resource_id=run.resource_id,
            request_context=run.request_context,
            get_state=lambda: run.state,
            set_state=set_state,
            get_output=get_output,
            init_data=init,
        )


__all__ = ["Entry", "Execution", "Outcome", "RetryConfig", "combine", "error_json"]
