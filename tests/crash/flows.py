"""Workflows whose side effects can be counted across SIGKILLs and storage faults.

Every execution of a step that does work (every step, and a gate once resumed) draws a fresh
token and appends two lines to the run's own log file (input `log`):

    start <run_id>:<step> <token> <pid>     before its work (it sleeps `work` seconds)
    done <run_id>:<step> <token> <pid>      the last thing before it returns

and returns the token in its output, so a checker can tell which execution's completion was
committed (the token in the stored output), which executions a kill or a failed commit cut
short, and in which server process each one ran. A gate suspends until it is resumed; its
output's `value` is the resume data's value (crash-load) or the resume data (crash-open).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from waystation import StepContext, create_step, create_workflow


class Value(BaseModel):
    value: int


def mark(log: str, kind: str, run_id: str, step: str, token: str) -> None:
    """Append one line with a single write (O_APPEND), so lines never interleave."""
    line = f"{kind} {run_id}:{step} {token} {os.getpid()}\n"
    with Path(log).open("a") as f:
        f.write(line)


def _execute(name: str, gate: bool) -> Any:
    async def execute(ctx: StepContext) -> dict[str, Any]:
        data = ctx.input_data
        if gate and ctx.resume_data is None:
            ctx.suspend({"gate": name}, resume_label=name)
        token = uuid.uuid4().hex[:12]
        mark(data["log"], "start", ctx.run_id, name, token)
        await asyncio.sleep(data.get("work", 0))
        out: dict[str, Any] = {"log": data["log"], "work": data.get("work", 0), "token": token}
        if gate:
            resumed = ctx.resume_data
            out["value"] = resumed.value if isinstance(resumed, Value) else resumed
        mark(data["log"], "done", ctx.run_id, name, token)
        return out

    return execute


def _workflow(workflow_id: str, steps: Sequence[str], gates: dict[str, Any]) -> Any:
    flow = create_workflow(id=workflow_id)
    for name in steps:
        execute = _execute(name, name in gates)
        flow = flow.then(create_step(id=name, resume_schema=gates.get(name), execute=execute))
    return flow.commit()


LOAD_STEPS = ("one", "gate1", "two", "gate2", "three")
LOAD_GATES = ("gate1", "gate2")

# input {log, work}: one -> gate1 -> two -> gate2 -> three; the gates resume with {value: int}
crash_load = _workflow("crash-load", LOAD_STEPS, dict.fromkeys(LOAD_GATES, Value))

# input {log, work, ...anything}: one -> gate -> two; the gate resumes with any JSON
crash_open = _workflow("crash-open", ("one", "gate", "two"), {"gate": None})
