"""Loading workflow definitions from Python modules named on the command line."""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Iterable
from types import ModuleType

from waystation.engine.definition import Workflow


def load_workflows(module_names: Iterable[str]) -> list[Workflow]:
    """Every committed workflow found at module level of each module, by id. Two different
    workflows with one id are an error; the same object seen twice (re-exported) is not."""
    found: dict[str, Workflow] = {}
    for name in module_names:
        module = _import(name)
        for value in vars(module).values():
            if not isinstance(value, Workflow) or not value.committed:
                continue
            seen = found.setdefault(value.id, value)
            if seen is not value:
                raise ValueError(f"two workflows have the id {value.id!r} (in module {name})")
    return sorted(found.values(), key=lambda wf: wf.id)


class WorkflowModuleError(ValueError):
    """A workflows module raised while it was imported: one line with the module, the line
    of its own code that raised (not the engine's, for a definition the engine refused)
    and the error."""

    def __init__(self, name: str, exc: BaseException) -> None:
        super().__init__(f"importing {name}: {_where(exc)}{type(exc).__name__}: {exc}")


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise  # the module itself (or its package) is missing: the caller says so
        raise WorkflowModuleError(name, exc) from exc
    except Exception as exc:
        raise WorkflowModuleError(name, exc) from exc


def _where(exc: BaseException) -> str:
    """`path:line: ` of the innermost frame of the traceback outside this package and the
    import machinery, or "" when there is none; for a SyntaxError, the place in the file
    that could not be compiled (its traceback ends in the import machinery)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: "
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith((ours, "<"))  # nor code made at run time (dataclasses)
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
