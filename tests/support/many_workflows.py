"""1,001 workflows of one step each, for the ListWorkflows page-size cap of 1,000."""

from __future__ import annotations

from typing import Any

from waystation import StepContext, create_step, create_workflow


async def _noop(ctx: StepContext) -> dict[str, Any]:
    return {}


_STEP = create_step(id="noop", execute=_noop)

# The server registers a module's workflows by its attributes.
for _i in range(1001):
    globals()[f"many_{_i:04d}"] = create_workflow(id=f"many-{_i:04d}").then(_STEP).commit()
