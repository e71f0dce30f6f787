"""The control-flow shapes: parallel, branch, loops, foreach, sleep.

Each shape keeps its bookkeeping in step records, so it resumes and recovers by the same
walk as a plain sequence:
- parallel / branch: the members' own records. A branch writes SKIPPED records for the arms
  whose condition did not hold, so conditions are never evaluated again.
- loops: the body's record carries `metadata.iteration` (0-based) and `metadata.done`.
  A new iteration rewrites the body's record (and drops a nested body's inner records), so
  resume data is used by the resumed iteration only.
- foreach: an aggregate record at the body's path, and one record per item at `id#index`.
  Items start in windows of `concurrency`, in index order; once an item of a window
  suspends, no later window starts until every suspended item is resumed. Which items ran
  therefore never depends on timing.
- sleep: a WAITING record with `metadata.wake_at`; the run is WAITING in the store and wakes
  at that time, in this process or, after a restart, in the next.
"""

from __future__ import annotations

import asyncio
import inspect

from waystation.engine.context import ControlSignal, StepContext
from waystation.engine.definition import (
    Branch,
    Condition,
    Entry,
    Foreach,
    Loop,
    Parallel,
    Sleep,
    Step,
    Workflow,
)
from waystation.engine.errors import USER_FAILURES, exception_text
from waystation.engine.executor import Execution, Outcome, combine, error_json, outcome_record
from waystation.engine.model import JSON, RunStatus, StepRecord, StepStatus, evolve, now
from waystation.engine.paths import Path, item_segment


async def run_entry(
    ex: Execution, workflow: Workflow, entry: Entry, prefix: Path, value: JSON, init: JSON
) -> Outcome:
    """Run one entry of a workflow's sequence."""
    if isinstance(entry, Step | Workflow):
        return await ex.node(workflow, entry, (*prefix, entry.id), value, init)
    if isinstance(entry, Parallel):
        return await _together(ex, workflow, entry.members, prefix, value, init)
    if isinstance(entry, Branch):
        return await _branch(ex, workflow, entry, prefix, value, init)
    if isinstance(entry, Loop):
        return await _loop(ex, workflow, entry, prefix, value, init)
    if isinstance(entry, Foreach):
        return await _foreach(ex, workflow, entry, prefix, value, init)
    return await _sleep(ex, entry, (*prefix, entry.id), value)


async def _together(
    ex: Execution,
    workflow: Workflow,
    members: list[Step | Workflow],
    prefix: Path,
    value: JSON,
    init: JSON,
) -> Outcome:
    outcomes = await ex.together(
        [ex.node(workflow, m, (*prefix, m.id), value, init) for m in members]
    )
    return combine(outcomes, [m.id for m in members])


async def _evaluate(
    ex: Execution,
    condition: Condition,
    path: Path,
    value: JSON,
    init: JSON,
    iteration_count: int = 0,
) -> bool:
    await ex.flush()  # user code: every transition before it is committed
    ctx = StepContext(ex.scope(path[:-1], init), None, value)
    ctx.iteration_count = iteration_count
    try:
        answer = condition(ctx)
        return bool(await answer if inspect.isawaitable(answer) else answer)
    except ControlSignal as signal:
        raise RuntimeError("a condition cannot suspend, bail or abort") from signal


async def _branch(
    ex: Execution, workflow: Workflow, branch: Branch, prefix: Path, value: JSON, init: JSON
) -> Outcome:
    paths = [(*prefix, step.id) for step in branch.members]
    records = [ex.snapshot.steps.get(p) for p in paths]
    if any(r is not None for r in records):
        chosen = [
            s
            for s, r in zip(branch.members, records, strict=True)
            if r is not None and r.status is not StepStatus.SKIPPED
        ]
    else:
        try:
            verdicts = [
                await _evaluate(ex, cond, path, value, init)
                for (cond, _), path in zip(branch.arms, paths, strict=True)
            ]
        except USER_FAILURES as exc:
            raised = exception_text(exc)
            return Outcome(
                "failed",
                error=error_json(
                    "CONDITION_FAILED", f"a condition of {branch.id} raised: {raised}", prefix, exc
                ),
            )
        chosen = [s for s, ok in zip(branch.members, verdicts, strict=True) if ok]
        skipped = {
            p: StepRecord(StepStatus.SKIPPED, payload=value)
            for p, ok in zip(paths, verdicts, strict=True)
            if not ok
        }
        if skipped:
            await ex.commit(skipped)
    return await _together(ex, workflow, chosen, prefix, value, init)


async def _loop(
    ex: Execution, workflow: Workflow, loop: Loop, prefix: Path, value: JSON, init: JSON
) -> Outcome:
    path = (*prefix, loop.body.id)
    record = ex.snapshot.steps.get(path)
    while True:
        if record is not None and record.status is StepStatus.SUCCESS:
            if record.metadata.get("done"):
                return Outcome("success", record.output)
            iteration = record.metadata.get("iteration", 0)
            try:
                holds = await _evaluate(
                    ex, loop.condition, path, record.output, init, iteration + 1
                )
            except USER_FAILURES as exc:
                return Outcome(
                    "failed",
                    error=error_json(
                        "CONDITION_FAILED",
                        f"the condition of loop {loop.id} raised: {exception_text(exc)}",
                        path,
                        exc,
                    ),
                )
            if holds == loop.until:  # dountil stops when it holds, dowhile when it does not
                await ex.commit({path: evolve(record, metadata={**record.metadata, "done": True})})
                return Outcome("success", record.output)
            record = StepRecord(
                StepStatus.RUNNING,
                payload=record.output,
                started_at=now(),
                metadata={"iteration": iteration + 1},
            )
            await ex.commit(
                {path: record}, deleted=[path] if isinstance(loop.body, Workflow) else None
            )
        elif record is None:
            record = StepRecord(
                StepStatus.RUNNING, payload=value, started_at=now(), metadata={"iteration": 0}
            )
            await ex.commit({path: record})
        outcome = await ex.node(workflow, loop.body, path, record.payload, init)
        if outcome.kind != "success":
            return outcome
        record = ex.snapshot.steps[path]


async def _foreach(
    ex: Execution, workflow: Workflow, foreach: Foreach, prefix: Path, value: JSON, init: JSON
) -> Outcome:
    path = (*prefix, foreach.body.id)
    aggregate = ex.snapshot.steps.get(path)
    if aggregate is not None and aggregate.status is StepStatus.SUCCESS:
        return Outcome("success", aggregate.output)
    if aggregate is None or aggregate.status is not StepStatus.RUNNING:
        aggregate = StepRecord(StepStatus.RUNNING, payload=value, started_at=now())
    if not isinstance(aggregate.payload, list):
        kind = type(aggregate.payload).__name__
        return await ex.fail(
            path,
            aggregate,
            error_json(
                "INVALID_STEP_INPUT", f"foreach [{foreach.id}] needs a list, got {kind}", path
            ),
        )
    if "count" not in aggregate.metadata:  # a new aggregate (or one time travel rewrote)
        count = {"count": len(aggregate.payload)}
        aggregate = evolve(aggregate, metadata={**aggregate.metadata, **count})
        await ex.commit({path: aggregate})
    items: list[JSON] = aggregate.payload
    outcomes: list[Outcome | None] = [None] * len(items)
    for start in range(0, len(items), foreach.concurrency):
        window = range(start, min(start + foreach.concurrency, len(items)))
        results = await ex.together(
            [
                ex.node(
                    workflow,
                    foreach.body,
                    (*prefix, item_segment(foreach.body.id, i)),
                    items[i],
                    init,
                )
                for i in window
            ]
        )
        for i, outcome in zip(window, results, strict=True):
            outcomes[i] = outcome
        if any(o.kind != "success" for o in results):
            break
    done = [o for o in outcomes if o is not None]
    worst = combine(done, [str(i) for i in range(len(done))])
    if worst.kind == "success" and len(done) == len(items):
        output = [o.output for o in done]
        await ex.commit(
            {path: evolve(aggregate, status=StepStatus.SUCCESS, output=output, ended_at=now())}
        )
        return Outcome("success", output)
    status = {
        "suspended": StepStatus.SUSPENDED,
        "failed": StepStatus.FAILED,
        "canceled": StepStatus.CANCELED,
    }.get(worst.kind, StepStatus.RUNNING)
    await ex.commit({path: outcome_record(aggregate, status, worst.error)})
    return worst


async def _sleep(ex: Execution, sleep: Sleep, path: Path, value: JSON) -> Outcome:
    record = ex.snapshot.steps.get(path)
    if record is not None and record.status is StepStatus.SUCCESS:
        return Outcome("success", record.output)
    run = ex.snapshot.run
    fresh = record is None or record.status is not StepStatus.WAITING
    if record is None or fresh:  # (`record is None` for mypy: `fresh` says as much)
        wake_at = sleep.until if sleep.until is not None else now() + (sleep.seconds or 0.0)
        record = StepRecord(
            StepStatus.WAITING, payload=value, started_at=now(), metadata={"wake_at": wake_at}
        )
    wake_at = record.metadata["wake_at"]
    if wake_at > now():
        ex.sleeping[path] = wake_at
        try:
            # The run is WAITING, and its callers are answered, once every strand of it
            # sleeps; a sleep continued after a restart or a takeover answers as a new one.
            settled = await ex.settle_asleep({path: record} if fresh else {})
            if fresh and not settled:
                await ex.commit({path: record})
            await asyncio.sleep(wake_at - now())
        finally:
            del ex.sleeping[path]
    elif fresh:
        await ex.commit({path: record})
    run.status = RunStatus.RUNNING
    run.wake_at = min(ex.sleeping.values(), default=None)
    done = evolve(record, status=StepStatus.SUCCESS, output=record.payload, ended_at=now())
    await ex.commit({path: done})
    return Outcome("success", record.payload)
