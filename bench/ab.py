"""`python -m bench.ab REV_A REV_B [--rounds 4]`: the same cycles against the server of two
revisions, alternating, so that a slow spell of the machine falls on both alike.

Each revision is checked out into a temporary git worktree; its `server/` goes first on the
server process's PYTHONPATH (ahead of the editable install), while the workflows and the
drivers come from this checkout. A round starts one server per revision in turn (A first in
odd rounds, B first in even ones; each after `sync`, so that the last one's writes are on
disk), warms it with 200 sequential cycles, then measures 1,000 sequential cycles (StartRun
and ResumeRun p50 in the client, server CPU per cycle) and 4,000 cycles at concurrency 64 in
two drivers (cycles/s, server CPU per cycle). Printed: each round's figures, and the median
of the rounds for each revision. This is how docs/performance.md measured each change of the
second and third sessions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import procs

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("start_p50_ms", "resume_p50_ms", "cpu_per_cycle_ms", "c64_cycles_s", "c64_cpu_ms")


def measure(server_tree: Path, workdir: Path) -> dict[str, float]:
    """One round against one revision's server."""
    env = {"PYTHONPATH": str(server_tree)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # procs.child_env passes it on to the server
    try:
        server = procs.waystation(workdir / "store.db", workdir / "server.log")
        server.wait_ready()
        drivers = procs.Drivers(server.target, 2, workdir / "drivers.log")
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    try:
        drivers.split("cycles", 200, "cycles", concurrency=2)
        before = procs.cpu_seconds(server.pid) or 0.0
        one = drivers.ask(
            [
                {"op": "cycles", "cycles": 1000, "concurrency": 1},
                {"op": "cycles", "cycles": 1, "concurrency": 1},
            ]
        )[0]
        sequential_cpu = (procs.cpu_seconds(server.pid) or 0.0) - before
        before, started = procs.cpu_seconds(server.pid) or 0.0, time.perf_counter()
        drivers.split("cycles", 4000, "cycles", concurrency=64)
        wall = time.perf_counter() - started
        c64_cpu = (procs.cpu_seconds(server.pid) or 0.0) - before
    finally:
        drivers.close()
        server.stop()
    return {
        "start_p50_ms": statistics.median(one["start"]),
        "resume_p50_ms": statistics.median(one["resume"]),
        "cpu_per_cycle_ms": sequential_cpu * 1000 / 1001,
        "c64_cycles_s": 4000 / wall,
        "c64_cpu_ms": c64_cpu * 1000 / 4000,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("a", help="the baseline revision")
    p.add_argument("b", help="the revision to compare with it")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    revisions = {"A": args.a, "B": args.b}
    with tempfile.TemporaryDirectory(prefix="waystation-ab-") as scratch:
        results: dict[str, list[dict[str, float]]] = {name: [] for name in revisions}
        with procs.worktrees(revisions, Path(scratch)) as trees:
            for i in range(args.rounds):
                # A then B, then B then A: the second of a pair ran measurably slower (the
                # first one's files still being written back), even for the same revision.
                for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    tree = trees[name]
                    procs_dir = Path(scratch) / f"round-{i}-{name}"
                    procs_dir.mkdir()
                    os.sync()
                    print(f"round {i + 1}/{args.rounds}: {name}", flush=True)
                    results[name].append(measure(tree / "server", procs_dir))
                    print("  " + "  ".join(f"{k} {v:.3f}" for k, v in results[name][-1].items()))
    print(f"{'figure':20s} {'A ' + args.a:>16s} {'B ' + args.b:>16s}  B/A")
    for figure in FIGURES:
        a = statistics.median(r[figure] for r in results["A"])
        b = statistics.median(r[figure] for r in results["B"])
        print(f"{figure:20s} {a:16.3f} {b:16.3f}  {b / a:.2f}")


if __name__ == "__main__":
    main()
