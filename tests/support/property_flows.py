"""The workflow of the stateful property test (tests/test_properties.py).

prepare -> first (suspends, label "first") -> second (suspends, label "second") -> finish.
Every step sleeps `pause` seconds (so a crash can land inside it) and then appends one line
to the file named by `log`: "prepare", "first:<value>", "second:<value>", "finish". The
value in a gate's line is the resume data it ran with, so the log shows both how often a
step ran and which resume took effect.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from tests.support.workflows import record
from waystation import StepContext, create_step, create_workflow


class Job(BaseModel):
    log: str
    pause: float = Field(default=0.0, ge=0)


class Answer(BaseModel):
    value: int = Field(ge=0)


STEPS = ("prepare", "first", "second", "finish")
GATES = ("first", "second")


async def _prepare(ctx: StepContext) -> dict[str, Any]:
    job: Job = ctx.input_data
    await asyncio.sleep(job.pause)
    record(job.log, "prepare")
    return {"log": job.log, "pause": job.pause, "values": []}


def _gate(name: str) -> Any:
    async def execute(ctx: StepContext) -> dict[str, Any]:
        data = ctx.input_data
        if ctx.resume_data is None:
            ctx.suspend({"gate": name}, resume_label=name)
        answer: Answer = ctx.resume_data
        await asyncio.sleep(data["pause"])
        record(data["log"], f"{name}:{answer.value}")
        return {**data, "values": [*data["values"], answer.value]}

    return execute


async def _finish(ctx: StepContext) -> dict[str, Any]:
    data = ctx.input_data
    await asyncio.sleep(data["pause"])
    record(data["log"], "finish")
    return {"values": data["values"]}


gates = (
    create_workflow(id="prop-gates", input_schema=Job)
    .then(create_step(id="prepare", input_schema=Job, execute=_prepare))
    .then(create_step(id="first", resume_schema=Answer, execute=_gate("first")))
    .then(create_step(id="second", resume_schema=Answer, execute=_gate("second")))
    .then(create_step(id="finish", execute=_finish))
    .commit()
)
