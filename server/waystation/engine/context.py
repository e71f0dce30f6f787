"""What a step's `execute(ctx)` sees, and the control-flow signals it can raise.

The signals derive from BaseException, so a step's `except Exception` cannot swallow them.
`suspend`, `bail` and `abort` raise at once: `return await ctx.suspend(...)` (Mastra's idiom),
`await ctx.suspend(...)` and `ctx.suspend(...)` all stop the step there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from waystation.engine.ids import MAX_ID
from waystation.engine.model import JSON, LONGEST_WAIT

if TYPE_CHECKING:
    from waystation.engine.definition import Step, Workflow


class ControlSignal(BaseException):
    """Base of the signals a step raises to steer its run."""


class SuspendSignal(ControlSignal):
    def __init__(
        self,
        payload: Any,
        labels: list[str],
        timeout: float | None = None,
        on_timeout: Any = "fail",
    ) -> None:
        super().__init__("step suspended")
        self.payload = payload
        self.labels = labels
        self.timeout = timeout
        self.on_timeout = on_timeout


class BailSignal(ControlSignal):
    def __init__(self, value: Any) -> None:
        super().__init__("workflow bailed")
        self.value = value


class AbortSignal(ControlSignal):
    def __init__(self) -> None:
        super().__init__("run aborted")


class _Done:
    """An awaitable that is already done, so `await ctx.set_state(...)` and a plain call both
    work (Mastra's setState is async; here the change is applied at once)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class InvalidState(ValueError):
    """What `set_state` raises for an update that a state schema refuses, or that JSON
    cannot hold: the state is left as it was, and unless the step catches it, the attempt
    fails with INVALID_STATE, one violation per field (as an output that breaks its schema
    does)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class RunScope:
    """What the executor lends a context: the run's ids, state and earlier results."""

    run_id: str
    workflow_id: str
    resource_id: str
    request_context: dict[str, Any]
    get_state: Callable[[], dict[str, Any]]
    set_state: Callable[[dict[str, Any], Step | None], None]
    get_output: Callable[[str], JSON]
    init_data: JSON


class StepContext:
    """The argument of a step's `execute`. Attribute names follow Mastra's, in snake_case."""

    def __init__(
        self,
        scope: RunScope,
        step: Step | Workflow | None,
        input_data: Any,
        resume_data: Any = None,
        suspend_data: Any = None,
        retry_count: int = 0,
    ) -> None:
        self._scope = scope
        self._step = step
        self.input_data = input_data
        self.resume_data = resume_data
        self.suspend_data = suspend_data
        self.retry_count = retry_count
        self.run_id = scope.run_id
        self.workflow_id = scope.workflow_id
        self.resource_id = scope.resource_id
        self.request_context = scope.request_context
        self.foreach_index: int | None = None
        self.iteration_count = 0

    @property
    def state(self) -> dict[str, Any]:
        """A copy of the workflow state; change it with set_state."""
        return copy.deepcopy(self._scope.get_state())

    def set_state(self, update: dict[str, Any]) -> _Done:
        """Merge `update` into the workflow state (validated against the state schemas);
        InvalidState, the state unchanged, if they refuse it."""
        from waystation.engine.definition import Step

        try:
            self._scope.set_state(
                dict(update), self._step if isinstance(self._step, Step) else None
            )
        except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
            raise InvalidState(exc) from exc
        return _Done()

    def suspend(
        self,
        payload: Any = None,
        resume_label: str | Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        on_timeout: Any = "fail",
    ) -> NoReturn:
        """Suspend this step with `payload`; the run waits for ResumeRun. With `timeout`
        (seconds) the suspension expires: then the run fails (`on_timeout="fail"`) or the
        step resumes once with `on_timeout` as its resume data (validated now)."""
        labels = [resume_label] if isinstance(resume_label, str) else list(resume_label or [])
        for label in labels:
            if not isinstance(label, str) or not 1 <= len(label) <= MAX_ID:
                raise ValueError(
                    f"a resume label is a string of 1-{MAX_ID} characters: {label!r:.60}"
                )
        if timeout is not None and not 0 < timeout <= LONGEST_WAIT:  # also NaN
            raise ValueError(
                f"suspend timeout must be a number of seconds above 0 and at most a century,"
                f" not {timeout!r}"
            )
        raise SuspendSignal(payload, labels, timeout, on_timeout)

    def bail(self, value: Any = None) -> NoReturn:
        """Finish the (innermost) workflow now with `value` as its result."""
        raise BailSignal(value)

    def abort(self) -> NoReturn:
        """Cancel the run from inside."""
        raise AbortSignal()

    def get_step_result(self, step: Step | Workflow | str) -> JSON:
        """The output of an earlier successful step of this workflow, or None."""
        step_id = step if isinstance(step, str) else step.id
        return self._scope.get_output(step_id)

    def get_init_data(self) -> JSON:
        """The input of the workflow this step belongs to."""
        return self._scope.init_data
