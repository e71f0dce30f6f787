"""The Python workflow API (DESIGN.md §2): `create_step`, `create_workflow` and the builder
(`.then`, `.parallel`, `.branch`, `.dowhile`, `.dountil`, `.foreach`, `.map`, `.sleep`,
`.sleep_until`, `.commit`).

A committed workflow is itself a step, so workflows nest. Steps inside `.parallel`,
`.branch`, loops and `.foreach` sit at the same level of paths as `.then` steps (as in Mastra:
a parallel branch `a` is resumed as `["a"]`), so step ids are unique within a workflow and
may not contain "." (the separator of a path's text form) or "#" (which marks foreach items).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from waystation.engine import schema
from waystation.engine.context import StepContext
from waystation.engine.ids import MAX_ID
from waystation.engine.model import LATEST_TIME, LONGEST_WAIT
from waystation.engine.paths import ITEM_MARK, SEPARATOR

Execute = Callable[[StepContext], Awaitable[Any]]
Condition = Callable[[StepContext], Awaitable[bool] | bool]
MapFn = Callable[[StepContext], Awaitable[Any] | Any]


@dataclass(frozen=True)
class RetryConfig:
    """Workflow-wide retries: `attempts` more tries after a failure, `delay` seconds apart
    (Mastra's `retryConfig` counts its delay in milliseconds)."""

    attempts: int = 0
    delay: float = 0.0

    def __post_init__(self) -> None:
        _check_retries("retry_config.attempts", self.attempts)
        if not isinstance(self.delay, int | float) or isinstance(self.delay, bool):
            raise TypeError(f"retry_config.delay must be a number of seconds, not {self.delay!r}")
        if not self.delay >= 0:  # also NaN
            raise ValueError(f"retry_config.delay must be >= 0 seconds, not {self.delay!r}")

    @classmethod
    def of(cls, value: RetryConfig | Mapping[str, Any] | None) -> RetryConfig:
        """A RetryConfig from itself, a mapping of its fields (Mastra's shape,
        `{"attempts": 2, "delay": 0.5}`), or None (no retries)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"attempts", "delay"})
            if unknown:
                raise TypeError(f"retry_config has no field {unknown}: use attempts and delay")
            return cls(**value)
        raise TypeError(f"retry_config must be a RetryConfig or a mapping, not {value!r}")


def _check_retries(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} id must be a non-empty string")
    for reserved in (SEPARATOR, ITEM_MARK):
        if reserved in value:
            raise ValueError(f"{kind} id {value!r} may not contain {reserved!r}")
    if len(value) > MAX_ID:  # the API refuses longer ids: such a workflow could not start
        raise ValueError(f"{kind} id {value[:40]!r}... is longer than {MAX_ID} characters")
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
        owner = f"step {id!r}"
        self.input_schema = schema.check(owner, "input_schema", input_schema)
        self.output_schema = schema.check(owner, "output_schema", output_schema)
        self.resume_schema = schema.check(owner, "resume_schema", resume_schema)
        self.suspend_schema = schema.check(owner, "suspend_schema", suspend_schema)
        self.state_schema = schema.check(owner, "state_schema", state_schema)
        if retries is not None:
            _check_retries(f"step {id!r}: retries", retries)
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
        retry_config: RetryConfig | Mapping[str, Any] | None = None,
    ) -> None:
        self.id = _check_id("workflow", id)
        self.description = description
        owner = f"workflow {id!r}"
        self.input_schema = schema.check(owner, "input_schema", input_schema)
        self.output_schema = schema.check(owner, "output_schema", output_schema)
        self.state_schema = schema.check(owner, "state_schema", state_schema)
        try:
            self.retry_config = RetryConfig.of(retry_config)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"workflow {id!r}: {exc}") from None
        self.entries: list[Entry] = []
        self.committed = False

    def then(self, step: Step | Workflow) -> Self:
        """Run `step` after the previous entries, with the previous output as its input."""
        return self._add(self._step(".then", step))

    def parallel(self, steps: Sequence[Step | Workflow], id: str = "") -> Self:
        """Run every step on the previous output; the output maps step id to output."""
        if isinstance(steps, str) or not isinstance(steps, Sequence) or not steps:
            raise TypeError(f"workflow {self.id!r}: .parallel takes a non-empty list of steps")
        members = [self._step(".parallel", step) for step in steps]
        return self._add(Parallel(self._block_id(id, "parallel"), members))

    def branch(self, arms: Sequence[tuple[Condition, Step | Workflow]], id: str = "") -> Self:
        """Run every step whose condition holds for the previous output; the output maps the
        ids of the steps that ran to their outputs. Conditions are not evaluated again when
        a suspended arm resumes."""
        if isinstance(arms, str) or not isinstance(arms, Sequence) or not arms:
            raise TypeError(
                f"workflow {self.id!r}: .branch takes a non-empty list of (condition, step)"
            )
        checked = []
        for arm in arms:
            if not isinstance(arm, tuple | list) or len(arm) != 2:
                raise TypeError(
                    f"workflow {self.id!r}: a .branch arm is a (condition, step) pair, not {arm!r}"
                )
            condition, step = arm
            checked.append((self._condition(".branch", condition), self._step(".branch", step)))
        return self._add(Branch(self._block_id(id, "branch"), checked))

    def dowhile(self, step: Step | Workflow, condition: Condition) -> Self:
        """Run `step`, then again on its own output while `condition` holds (the condition
        sees the output as `input_data` and the iterations done as `iteration_count`; the
        body's steps, also inside a nested workflow, have the iterations done before theirs
        as `iteration_count`)."""
        step = self._step(".dowhile", step)
        return self._add(Loop(step.id, step, self._condition(".dowhile", condition), until=False))

    def dountil(self, step: Step | Workflow, condition: Condition) -> Self:
        """Run `step`, then again on its own output until `condition` holds."""
        step = self._step(".dountil", step)
        return self._add(Loop(step.id, step, self._condition(".dountil", condition), until=True))

    def foreach(self, step: Step | Workflow, concurrency: int = 1) -> Self:
        """Run `step` on every item of the previous output (a list); the output is the list
        of outputs in input order. Items start in windows of `concurrency`; once an item
        suspends, no further window starts until every suspended item is resumed."""
        step = self._step(".foreach", step)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool):
            raise TypeError(
                f"workflow {self.id!r}: foreach concurrency must be an int, not {concurrency!r}"
            )
        if concurrency < 1:
            raise ValueError(f"workflow {self.id!r}: foreach concurrency must be at least 1")
        return self._add(Foreach(step.id, step, concurrency))

    def map(self, fn: MapFn, id: str = "") -> Self:
        """Reshape the previous output with `fn(ctx)` (sync or async)."""
        if not callable(fn):
            raise TypeError(f"workflow {self.id!r}: .map takes a function of ctx, not {fn!r}")
        return self._add(MapStep(id=self._block_id(id, "map"), execute=_map_execute(fn)))

    def sleep(self, seconds: float, id: str = "") -> Self:
        """Pause the run for `seconds` (durable: the wake-up time is stored)."""
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise TypeError(
                f"workflow {self.id!r}: sleep takes a number of seconds, not {seconds!r}"
            )
        if not 0 <= seconds <= LONGEST_WAIT:  # also NaN
            raise ValueError(
                f"workflow {self.id!r}: sleep takes a number of seconds from 0 to a century,"
                f" not {seconds!r}"
            )
        return self._add(Sleep(self._block_id(id, "sleep"), seconds=float(seconds)))

    def sleep_until(self, when: datetime, id: str = "") -> Self:
        """Pause the run until `when` (an aware datetime; durable)."""
        if not isinstance(when, datetime):
            raise TypeError(f"workflow {self.id!r}: sleep_until takes a datetime, not {when!r}")
        if when.tzinfo is None:
            raise ValueError(f"workflow {self.id!r}: sleep_until needs a timezone-aware datetime")
        if when.timestamp() > LATEST_TIME:
            raise ValueError(
                f"workflow {self.id!r}: sleep_until {when.isoformat()} is after"
                " 9999-12-31T23:59:59Z, the latest time the API can carry"
            )
        return self._add(Sleep(self._block_id(id, "sleep-until"), until=when.timestamp()))

    def commit(self) -> Self:
        """Freeze the workflow; only a committed workflow can run or be nested."""
        if not self.entries:
            raise ValueError(f"workflow {self.id!r} has no steps; add them with .then(...)")
        self.committed = True
        return self

    def child(self, step_id: str) -> Step | Workflow | None:
        """The step or nested workflow with this id at this level (inside blocks too)."""
        return next((s for s in self.steps() if s.id == step_id), None)

    def steps(self) -> list[Step | Workflow]:
        """Every step and nested workflow at this level, blocks unfolded, in order."""
        return [s for entry in self.entries for s in entry_members(entry)]

    @property
    def can_suspend(self) -> bool:
        return any(s.can_suspend for s in self.steps())

    def _step(self, method: str, value: Any) -> Step | Workflow:
        """`value`, checked as every step of every entry is: a step or a committed workflow."""
        if not isinstance(value, Step | Workflow):
            raise TypeError(
                f"workflow {self.id!r}: {method} takes a step or a committed workflow,"
                f" not {value!r}"
            )
        if isinstance(value, Workflow) and not value.committed:
            raise ValueError(f"nested workflow {value.id!r} must be committed before use")
        return value

    def _condition(self, method: str, value: Any) -> Condition:
        if not callable(value):
            raise TypeError(
                f"workflow {self.id!r}: a {method} condition is a function of ctx, not {value!r}"
            )
        return value  # type: ignore[no-any-return]

    def _block_id(self, given: str, kind: str) -> str:
        return given or f"{kind}-{len(self.entries) + 1}"

    def _add(self, entry: Entry) -> Self:
        if self.committed:
            raise ValueError(f"workflow {self.id!r} is committed; build a new one to change it")
        ids = [e.id for e in self.entries] + [s.id for s in self.steps()]
        member_ids = [m.id for m in entry_members(entry)]
        twice = sorted({i for i in member_ids if member_ids.count(i) > 1})
        if twice:
            raise ValueError(
                f"workflow {self.id!r}: two steps of one {entry.kind} have the id {twice[0]!r}"
            )
        new_ids = {entry.id, *member_ids}
        _check_id("step", entry.id)
        clash = new_ids.intersection(ids)
        if clash:
            raise ValueError(
                f"workflow {self.id!r} already has a step with id {sorted(clash)[0]!r}"
            )
        self.entries.append(entry)
        return self

    def __repr__(self) -> str:
        return f"Workflow(id={self.id!r}, steps={[e.id for e in self.entries]})"


class MapStep(Step):
    """The step `.map(fn)` adds: a reshaping of the previous output."""

    kind = "map"


@dataclass(frozen=True)
class Parallel:
    id: str
    members: list[Step | Workflow]
    kind = "parallel"


@dataclass(frozen=True)
class Branch:
    id: str
    arms: list[tuple[Condition, Step | Workflow]]
    kind = "branch"

    @property
    def members(self) -> list[Step | Workflow]:
        return [step for _, step in self.arms]


@dataclass(frozen=True)
class Loop:
    """A loop's id is its body's id: the body is what suspends and what a path names."""

    id: str
    body: Step | Workflow
    condition: Condition
    until: bool
    kind = "loop"

    @property
    def members(self) -> list[Step | Workflow]:
        return [self.body]


@dataclass(frozen=True)
class Foreach:
    """A foreach's id is its body's id; item `i` of it runs under the path segment `id#i`."""

    id: str
    body: Step | Workflow
    concurrency: int
    kind = "foreach"

    @property
    def members(self) -> list[Step | Workflow]:
        return [self.body]


@dataclass(frozen=True)
class Sleep:
    id: str
    seconds: float | None = None
    until: float | None = None
    kind = "sleep"
    members: tuple[()] = ()


Entry = Step | Workflow | Parallel | Branch | Loop | Foreach | Sleep


def entry_members(entry: Entry) -> list[Step | Workflow]:
    """The steps and nested workflows of one entry of a workflow (a block's members)."""
    if isinstance(entry, Step | Workflow):
        return [entry]
    return list(entry.members)


def _map_execute(fn: MapFn) -> Execute:
    async def execute(ctx: StepContext) -> Any:
        value = fn(ctx)
        return await value if inspect.isawaitable(value) else value

    return execute


def create_step(**kwargs: Any) -> Step:
    """Create a step: `create_step(id=..., input_schema=..., execute=async_fn, ...)`."""
    return Step(**kwargs)


def create_workflow(**kwargs: Any) -> Workflow:
    """Create a workflow: `create_workflow(id=..., input_schema=...).then(step).commit()`."""
    return Workflow(**kwargs)
