"""Step paths: tuples of step ids from the top-level step down through nested workflows.

The server never splits a segment. The dotted text form is for people and for map keys;
step ids may not contain a dot, so the text form is unambiguous.
"""

from __future__ import annotations

Path = tuple[str, ...]

SEPARATOR = "."
ITEM_MARK = "#"
"""Record keys of foreach items put `#index` after the foreach step's id: ("body#3",)."""


def format_path(path: Path) -> str:
    """The text form: segments joined by dots."""
    return SEPARATOR.join(path)


def parse_path(text: str) -> Path:
    """The inverse of format_path, for people's input (the CLI) and stored keys."""
    return tuple(text.split(SEPARATOR)) if text else ()


def is_prefix(prefix: Path, path: Path) -> bool:
    """Whether `path` lies at or below `prefix`."""
    return path[: len(prefix)] == prefix


def item_segment(step_id: str, index: int) -> str:
    """The path segment under which item `index` of a foreach runs."""
    return f"{step_id}{ITEM_MARK}{index}"


def split_items(path: Path) -> tuple[Path, int | None]:
    """A record path as the API names it: item marks removed, with the (innermost) item
    index, e.g. ("body#3", "inner") -> (("body", "inner"), 3)."""
    index: int | None = None
    out = []
    for segment in path:
        step_id, mark, number = segment.partition(ITEM_MARK)
        if mark:
            index = int(number)
        out.append(step_id)
    return tuple(out), index


def item_indices(path: Path) -> tuple[int, ...]:
    """Every item index in a record path, outermost first: a foreach can run inside an
    item of another, ("outer#1", "inner#0", "leaf") -> (1, 0); () outside any foreach."""
    return tuple(int(segment.partition(ITEM_MARK)[2]) for segment in path if ITEM_MARK in segment)


def items_text(indices: tuple[int, ...]) -> str:
    """Item indices (outermost first) for people, innermost first: "item 0 in item 1"."""
    return " in ".join(f"item {i}" for i in reversed(indices))


def shown(path: Path) -> str:
    """A record path for people: the step as the API names it, then its item, if any:
    "[body.check] (item 2)", or "[g.check] (item 0 in item 1)" for an item of a foreach
    inside item 1 of another."""
    api, indices = split_items(path)[0], item_indices(path)
    return f"[{format_path(api)}]" + (f" ({items_text(indices)})" if indices else "")


def enclosing(leaf: Path) -> list[Path]:
    """The records around `leaf`, innermost last: each nested workflow's, and for a foreach
    item the foreach's aggregate record as well as the item's."""
    out: list[Path] = []
    for depth in range(1, len(leaf) + 1):
        prefix = leaf[:depth]
        step_id, mark, _ = prefix[-1].partition(ITEM_MARK)
        out += [(*prefix[:-1], step_id), prefix] if mark else [prefix]
    return [path for path in out if path != leaf]
