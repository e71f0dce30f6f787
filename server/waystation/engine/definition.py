"""The Python workflow API (DESIGN.md §2): `create_step`, `create_workflow`, `.then`, `.commit`.

A committed workflow is itself a step, so workflows nest. Step ids are unique among their
siblings and may not contain "." (the separator of a path's text form).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

from waystation.engine import schema
from waystation.engine.context import StepContext
from waystation.engine.paths import SEPARATOR

Execute = Callable[[StepContext], Awaitable[Any]]


@dataclass(frozen=True)
class RetryConfig:
    """Workflow-wide retries: `attempts` more tries after a failure, `delay` seconds apart."""

    attempts: int = 0
    delay: float = 0.0


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} id must be a non-empty string")
    if SEPARATOR in value:
        raise ValueError(f"{kind} id {value!r} may not contain {SEPARATOR!r}")
    return value


class Step:
    """A unit of work with schemas for its input, output, suspend payload and resume data."""

    kind = "step"

    def __init__(
        self,
        *,
        id: str,
        execute: Execute,
        description: str = "",
        input_schema: schema.Schema = None,
        output_schema: schema.Schema = None,
        resume_schema: schema.Schema = None,
        suspend_schema: schema.Schema = None,
        state_schema: schema.Schema = None,
        retries: int | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(execute):
            raise TypeError(f"step {id!r}: execute must be an async function")
        self.id = _check_id("step", id)
        self.execute = execute
        self.description = description
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.resume_schema = resume_schema
        self.suspend_schema = suspend_schema
        self.state_schema = state_schema
        self.retries = retries

    @property
    def can_suspend(self) -> bool:
        return self.resume_schema is not None or self.suspend_schema is not None

    def __repr__(self) -> str:
        return f"Step(id={self.id!r})"


class Workflow:
    """A sequence of steps built with `.then(...)` and frozen with `.commit()`."""

    kind = "workflow"
    resume_schema: schema.Schema = None
    suspend_schema: schema.Schema = None
    retries: int | None = None

    def __init__(
        self,
        *,
        id: str,
        description: str = "",
        input_schema: schema.Schema = None,
        output_schema: schema.Schema = None,
        state_schema: schema.Schema = None,
        retry_config: RetryConfig | None = None,
    ) -> None:
        self.id = _check_id("workflow", id)
        self.description = description
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.state_schema = state_schema
        self.retry_config = retry_config or RetryConfig()
        self.entries: list[Step | Workflow] = []
        self.committed = False

    def then(self, step: Step | Workflow) -> Self:
        """Run `step` after the previous entries, with the previous output as its input."""
        self._add(step)
        return self

    def commit(self) -> Self:
        """Freeze the workflow; only a committed workflow can run or be nested."""
        if not self.entries:
            raise ValueError(f"workflow {self.id!r} has no steps; add them with .then(...)")
        self.committed = True
        return self

    def child(self, step_id: str) -> Step | Workflow | None:
        """The entry with this id, if any."""
        return next((e for e in self.entries if e.id == step_id), None)

    @property
    def can_suspend(self) -> bool:
        return any(e.can_suspend for e in self.entries)

    def _add(self, step: Step | Workflow) -> None:
        if self.committed:
            raise ValueError(f"workflow {self.id!r} is committed; build a new one to change it")
        if isinstance(step, Workflow) and not step.committed:
            raise ValueError(f"nested workflow {step.id!r} must be committed before use")
        if not isinstance(step, Step | Workflow):
            raise TypeError(f"workflow {self.id!r}: expected a step or workflow, got {step!r}")
        if self.child(step.id) is not None:
            raise ValueError(f"workflow {self.id!r} already has a step with id {step.id!r}")
        self.entries.append(step)

    def __repr__(self) -> str:
        return f"Workflow(id={self.id!r}, steps={[e.id for e in self.entries]})"


def create_step(**kwargs: Any) -> Step:
    """Create a step: `create_step(id=..., input_schema=..., execute=async_fn, ...)`."""
    return Step(**kwargs)


def create_workflow(**kwargs: Any) -> Workflow:
    """Create a workflow: `create_workflow(id=..., input_schema=...).then(step).commit()`."""
    return Workflow(**kwargs)
