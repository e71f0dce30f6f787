"""The long form of the crash suite: `python -m tests.crash --kills 200 --seed N`.

Runs the load against a real server killed with SIGKILL `--kills` times, checks the history,
prints the seed and a one-line summary, and exits 1 on any lost acknowledged operation,
duplicate step execution, unsettled run or other violation (each printed). The run's files
(database, server log, call log, side-effect logs) stay in `--dir` for a post-mortem.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

from tests.crash.checker import check
from tests.crash.driver import LoadConfig, default_directory, run_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.crash", description=__doc__)
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--workers", type=int, default=6, help="concurrent clients")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    directory = args.dir or default_directory(seed)
    print(f"crash suite: seed={seed} kills={args.kills} files in {directory}", flush=True)
    config = LoadConfig(
        seed=seed,
        kills=args.kills,
        workers=args.workers,
        progress=lambda text: print(f"  {text}", flush=True),
    )
    result = asyncio.run(run_load(directory, config))
    verdict = check(result.calls, result.runs, result.logs, result.pids, result.stored_ids)
    for violation in verdict.violations:
        print(f"VIOLATION {violation}")
    print(verdict.summary(seed, result.kills, len(result.pids)))
    print(f"took {result.seconds:.0f}s")
    return 1 if verdict.violations else 0


if __name__ == "__main__":
    sys.exit(main())
