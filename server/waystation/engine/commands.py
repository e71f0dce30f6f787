"""The engine's inputs: what a StartRun or ResumeRun asks for, in domain terms."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from waystation.engine.model import JSON
from waystation.engine.paths import Path
from waystation.engine.tracing import CallTrace


@dataclass
class StartCommand:
    workflow_id: str
    run_id: str = ""
    resource_id: str = ""
    input_data: JSON = None
    initial_state: dict[str, Any] | None = None
    request_context: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    return_immediately: bool = False
    trace: CallTrace | None = None

    def fingerprint(self) -> str:
        return fingerprint(self.run_id, self.input_data, self.initial_state, self.request_context)


@dataclass
class ResumeCommand:
    run_id: str
    workflow_id: str = ""
    resume_data: JSON = None
    step: Path = ()
    label: str = ""
    foreach_index: int | None = None
    request_context: dict[str, Any] = field(default_factory=dict)
    retry_count: int = 0
    request_id: str = ""
    validate_only: bool = False
    expected_version: int | None = None
    trace: CallTrace | None = None
    actor: str = ""
    """Who resumes (recorded with the step): the authenticated caller's name."""

    def fingerprint(self) -> str:
        return fingerprint(
            self.step,
            self.label,
            self.foreach_index,
            self.resume_data,
            self.request_context,
            self.retry_count,
            self.expected_version,
        )


@dataclass
class TimeTravelCommand:
    run_id: str
    step: Path
    input_data: JSON = None
    resume_data: JSON = None
    initial_state: dict[str, Any] | None = None
    request_context: dict[str, Any] = field(default_factory=dict)
    trace: CallTrace | None = None
    request_id: str = ""

    def fingerprint(self) -> str:
        return fingerprint(
            self.step, self.input_data, self.resume_data, self.initial_state, self.request_context
        )


def fingerprint(*arguments: Any) -> str:
    """A digest of what a call asks for, stored with its request id (`RequestKey`): a retry
    repeats it, a request id reused for another call does not. How the caller waits for
    the answer, or traces it, is not part of it."""
    canonical = _numbers_as_equal(arguments)
    try:
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=repr)
    except TypeError:  # keys of mixed types, which cannot be sorted
        text = repr(arguments)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _numbers_as_equal(value: Any) -> Any:
    """`value` with its whole floats as integers: numbers that compare equal are the same
    argument, whichever way a retry writes them (1, 1.0; 0, -0.0, which many JSON writers
    send as 0: JavaScript's JSON.stringify(-0) is "0")."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: _numbers_as_equal(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers_as_equal(item) for item in value]
    return value
