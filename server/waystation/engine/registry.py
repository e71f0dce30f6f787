"""Loading workflow definitions from Python modules named on the command line."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from waystation.engine.definition import Workflow


def load_workflows(module_names: Iterable[str]) -> list[Workflow]:
    """Every committed workflow found at module level of each module, by id. Two different
    workflows with one id are an error; the same object seen twice (re-exported) is not."""
    found: dict[str, Workflow] = {}
    for name in module_names:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if not isinstance(value, Workflow) or not value.committed:
                continue
            seen = found.setdefault(value.id, value)
            if seen is not value:
                raise ValueError(f"two workflows have the id {value.id!r} (in module {name})")
    return sorted(found.values(), key=lambda wf: wf.id)
