"""Step paths: tuples of step ids from the top-level step down through nested workflows.

The server never splits a segment. The dotted text form is for people and for map keys;
step ids may not contain a dot, so the text form is unambiguous.
"""

from __future__ import annotations

Path = tuple[str, ...]

SEPARATOR = "."


def format_path(path: Path) -> str:
    """The text form: segments joined by dots."""
    return SEPARATOR.join(path)


def parse_path(text: str) -> Path:
    """The inverse of format_path, for people's input (the CLI) and stored keys."""
    return tuple(text.split(SEPARATOR)) if text else ()


def is_prefix(prefix: Path, path: Path) -> bool:
    """Whether `path` lies at or below `prefix`."""
    return path[: len(prefix)] == prefix
