"""Waystation: durable workflows served over gRPC.

Define workflows with `create_step` and `create_workflow` (DESIGN.md §2); serve them with
`waystation serve --workflows your.module`.
"""

from waystation.engine import (
    InvalidState,
    RetryConfig,
    Step,
    StepContext,
    Workflow,
    create_step,
    create_workflow,
)

__all__ = [
    "InvalidState",
    "RetryConfig",
    "Step",
    "StepContext",
    "Workflow",
    "create_step",
    "create_workflow",
]
