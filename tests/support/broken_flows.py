"""A workflow module that cannot be served: two workflows share one id."""

from __future__ import annotations

from waystation import StepContext, create_step, create_workflow


async def _one(ctx: StepContext) -> dict[str, int]:
    return {"v": 1}


first = create_workflow(id="twice").then(create_step(id="a", execute=_one)).commit()
second = create_workflow(id="twice").then(create_step(id="b", execute=_one)).commit()
