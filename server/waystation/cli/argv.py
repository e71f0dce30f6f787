"""Global options written after a client command: `waystation runs show ID --json`.

Click takes a group's options only before its subcommand, and people write them at the end
as often as not (`kubectl`, `gh` and `docker` accept both). Before click parses the command
line, `hoist` moves the root's options that follow the `workflows` or `runs` group to just
before it, with their values. It knows which of the command's own options take a value, so
that a value is never taken for an option, and it stops at `--`. `serve` is left alone: it
has a `--tls-cert` and `--tls-key` of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer.main

GROUPS = ("workflows", "runs")


def hoist(args: Sequence[str], app: typer.Typer) -> list[str]:
    """`args` with the root's options after a client group moved before the group."""
    root = typer.main.get_command(app)
    root_flags, root_valued = _options(root)
    args = list(args)
    at = _group_index(args, root_valued)
    if at is None:
        return args
    group = root.commands[args[at]]  # type: ignore[attr-defined]
    command = None
    kept: list[str] = []
    moved: list[str] = []
    i = at + 1
    while i < len(args):
        token = args[i]
        name = token.split("=", 1)[0]
        if token == "--":
            kept.extend(args[i:])
            break
        if name in root_flags:
            moved.append(token)
        elif name in root_valued:
            moved.append(token)
            if "=" not in token and i + 1 < len(args):
                i += 1
                moved.append(args[i])
        else:
            kept.append(token)
            if command is None and not token.startswith("-"):
                command = group.commands.get(token)
            elif command is not None and token in _options(command)[1] and i + 1 < len(args):
                i += 1
                kept.append(args[i])  # the value of one of the command's own options
        i += 1
    return [*args[:at], *moved, args[at], *kept]


def _group_index(args: list[str], root_valued: set[str]) -> int | None:
    """Where the client group is named, skipping the values of the root's options; None for
    `serve`, for no command and for anything else."""
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            return None
        if token in root_valued:
            i += 2
            continue
        if not token.startswith("-"):
            return i if token in GROUPS else None
        i += 1
    return None


def _options(command: Any) -> tuple[set[str], set[str]]:
    """The command's flags and its options that take a value, by every name they have."""
    flags: set[str] = set()
    valued: set[str] = set()
    for param in command.params:
        names = [*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())]
        names = [name for name in names if name.startswith("-")]
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            flags.update(names)
        else:
            valued.update(names)
    return flags, valued
