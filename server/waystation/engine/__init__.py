"""The workflow engine: definitions, execution, resume rules and errors. No grpc, no SQL."""

from waystation.engine.commands import ResumeCommand, StartCommand, TimeTravelCommand
from waystation.engine.context import InvalidState, StepContext
from waystation.engine.definition import RetryConfig, Step, Workflow, create_step, create_workflow
from waystation.engine.engine import Engine
from waystation.engine.model import RunRecord, RunStatus, StepRecord, StepStatus
from waystation.engine.paths import Path, format_path, parse_path
from waystation.engine.registry import load_workflows
from waystation.engine.result import WorkflowResultData
from waystation.engine.tracing import CallTrace, Telemetry, TracingOptions

__all__ = [
    "CallTrace",
    "Engine",
    "InvalidState",
    "Path",
    "ResumeCommand",
    "RetryConfig",
    "RunRecord",
    "RunStatus",
    "StartCommand",
    "Step",
    "StepContext",
    "StepRecord",
    "StepStatus",
    "Telemetry",
    "TimeTravelCommand",
    "TracingOptions",
    "Workflow",
    "WorkflowResultData",
    "create_step",
    "create_workflow",
    "format_path",
    "load_workflows",
    "parse_path",
]
