"""Small statistics over latencies in milliseconds."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are there (rounds where a figure was measured)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 and count else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def gaps_ms(times: Sequence[float]) -> list[float]:
    """Milliseconds between consecutive perf_counter() readings."""
    return [(b - a) * 1000 for a, b in itertools.pairwise(times)]
