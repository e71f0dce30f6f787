"""Running Hypothesis against a live grpc.aio server from an async test, with a fixed seed
list and a reproduction line on failure (issue 8, STYLE.md rule 23).

The server and its channel live on the test's event loop (pytest-asyncio, function scope).
Hypothesis runs its examples in a worker thread, so the loop stays free to serve; each
example hops back to the loop with `Bridge.run(async_fn)` (the zero-argument async function
is called on the loop, so grpc.aio call objects are created there).

Seeds: every fuzz or property test is parametrized over `SEEDS`, fixed in CI. Set
`WAYSTATION_FUZZ_SEEDS=1,2,3` to run other seeds and `WAYSTATION_FUZZ_SCALE=10` for ten
times the examples. A failure names its seed and the command that reproduces it, and
Hypothesis prints the shrunk example and a `@reproduce_failure` blob (`print_blob`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as with_seed

try:  # a private knob (see SHRINK_SECONDS); without it, Hypothesis's own limit applies
    from hypothesis.internal.conjecture import engine as conjecture_engine
except ImportError:  # pragma: no cover
    conjecture_engine = None  # type: ignore[assignment]

T = TypeVar("T")

SEEDS: list[int] = [
    int(s) for s in os.environ.get("WAYSTATION_FUZZ_SEEDS", "8,1308").split(",") if s.strip()
]
SCALE: float = float(os.environ.get("WAYSTATION_FUZZ_SCALE", "1"))

# Shrinking a failure found against a live server costs calls (a stateful case: a whole
# replay) per attempt. Hypothesis gives up shrinking after MAX_SHRINKING_SECONDS (300 s by
# default, a private knob): bounded here, so that a failing test still reports its shrunk
# example and reproduction line well within the per-test timeout (pyproject: 60 s).
SHRINK_SECONDS = int(os.environ.get("WAYSTATION_FUZZ_SHRINK_SECONDS", "20"))


def fuzz_settings(max_examples: int, **overrides: Any) -> settings:
    """Settings for a test against a live server: `max_examples` scaled by SCALE, no
    deadline (the machine is shared), no example database (the seed list is the corpus),
    health checks about slow data and function-scoped fixtures off (the server fixture is
    shared by every example on purpose)."""
    base: dict[str, Any] = dict(
        max_examples=max(1, int(max_examples * SCALE)),
        deadline=None,
        database=None,
        derandomize=False,  # the explicit seed decides
        print_blob=True,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
            HealthCheck.large_base_example,
        ],
    )
    base.update(overrides)
    return settings(**base)


class Bridge:
    """Runs async work on the test's loop from the Hypothesis thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 30.0) -> None:
        self.loop = loop
        self.timeout = timeout

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(self.timeout)


def reproduce_line(nodeid: str, seed: int) -> str:
    return (
        f"to reproduce: WAYSTATION_FUZZ_SEEDS={seed} .venv/bin/pytest '{nodeid}' "
        f"(Hypothesis seed {seed}; the @reproduce_failure blob above replays the exact example)"
    )


def run_here(test: Callable[[], None], seed: int, request: Any) -> None:
    """Run a pure @given test with `seed` in this thread (no server to keep serving); on
    failure, print and attach the line that reproduces it. `request` is pytest's."""
    try:
        with_seed(seed)(test)()
    except BaseException as exc:
        line = reproduce_line(request.node.nodeid, seed)
        print(line)
        exc.add_note(line)
        raise


async def run_seeded(test: Callable[[], None], seed: int, nodeid: str) -> None:
    """Run the @given-decorated `test` with `seed` in a worker thread; on failure, print
    and attach the line that reproduces it."""
    await run_in_thread(with_seed(seed)(test), seed, nodeid)


async def run_in_thread(fn: Callable[[], None], seed: int, nodeid: str) -> None:
    """Run `fn` (which runs Hypothesis with `seed`) in a worker thread, so the loop keeps
    serving; on failure, print and attach the line that reproduces it."""
    saved = getattr(conjecture_engine, "MAX_SHRINKING_SECONDS", None)
    if saved is not None:
        conjecture_engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS
    try:
        await asyncio.to_thread(fn)
    except BaseException as exc:
        line = reproduce_line(nodeid, seed)
        print(line)
        exc.add_note(line)
        raise
    finally:
        if saved is not None:
            conjecture_engine.MAX_SHRINKING_SECONDS = saved
