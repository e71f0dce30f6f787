"""`python -m bench.wide [--sizes 500 2000]`: a foreach whose items all suspend at once, each
with a resume label, in-process on a SQLite file: the StartRun until every item waits, then
20 resumes of one item each, at two sizes, and the time per item of the larger against the
smaller (1.0 is linear).

The run's header holds every resume label and is written at every commit, so each item's
suspension costs more as more items wait: the growth is in what a commit writes, not in the
Python around it, and this measures how much of it is left (docs/performance.md, "Wide
runs"). Timed on a shared machine: compare the ratio, measured in one run, not the times.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from waystation import StepContext, create_step, create_workflow
from waystation.engine import Engine, ResumeCommand, StartCommand
from waystation.storage import SqliteStore


class Approval(BaseModel):
    ok: bool = True


async def _ask(ctx: StepContext) -> Any:
    if ctx.resume_data is None:
        ctx.suspend({"item": ctx.input_data}, resume_label=f"item-{ctx.input_data}")
    return ctx.input_data


async def measure(size: int, folder: Path) -> tuple[float, float]:
    """Seconds for the start of `size` items, and for 20 resumes of one item each."""
    step = create_step(id="ask", resume_schema=Approval, execute=_ask)
    workflow = create_workflow(id=f"wide-{size}").foreach(step, concurrency=size).commit()
    store = SqliteStore(str(folder / f"wide-{size}.db"))
    await store.setup()
    engine = Engine(store, [workflow])
    await engine.start()
    try:
        began = time.perf_counter()
        run = await engine.start_run(
            StartCommand(workflow_id=workflow.id, input_data=list(range(size)))
        )
        started = time.perf_counter() - began
        began = time.perf_counter()
        for i in range(20):
            cmd = ResumeCommand(run.run_id, step=("ask",), foreach_index=i, resume_data={})
            await engine.resume_run(cmd)
        return started, time.perf_counter() - began
    finally:
        await engine.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[500, 2000])
    small, large = parser.parse_args().sizes
    with tempfile.TemporaryDirectory() as folder:
        times = {n: asyncio.run(measure(n, Path(folder))) for n in (small, large)}
    for n, (start, resumes) in times.items():
        print(
            f"{n:>6} items: start {start:.2f} s ({start / n * 1e3:.3f} ms per item), "
            f"20 resumes {resumes:.2f} s"
        )
    per_item = (times[large][0] / large) / (times[small][0] / small)
    per_resume = times[large][1] / times[small][1]
    print(f"start, per item, {large} against {small}: x{per_item:.2f} (1.0 is linear)")
    print(f"one resume, {large} against {small}: x{per_resume:.2f} (1.0 is flat)")


if __name__ == "__main__":
    main()
