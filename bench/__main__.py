"""`python -m bench [--quick] [--out bench/results.json]`: measure, print the table, write JSON.

Run from the repository root with the project's virtualenv (`make bench`). `--quick` is the
small version CI runs to prove that the bench works; its figures mean little.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench import report
from bench.run import Bench, Config, log, summarize

HERE = Path(__file__).resolve().parent


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small counts (CI): about a minute")
    p.add_argument("--out", type=Path, default=HERE / "results.json", help="the JSON file")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the comparable figures")
    p.add_argument("--drivers", type=int, help="client processes for concurrency 64 and bursts")
    p.add_argument("--burst", type=int, help="runs in the burst (default 1000; quick 100)")
    p.add_argument(
        "--growth-levels", help="stored runs, comma-separated (default 100,10000,1000000)"
    )
    p.add_argument("--loop-n", type=int, help="iterations of the long loop and items of foreach")
    p.add_argument("--no-peers", dest="peers", action="store_false", help="skip Mastra, LangGraph")
    p.add_argument("--no-growth", dest="growth", action="store_false", help="skip the big stores")
    p.add_argument("--workdir", type=Path, help="where stores and logs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (stores, server logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    levels = (
        tuple(int(x.replace("_", "")) for x in args.growth_levels.split(","))
        if args.growth_levels
        else None
    )
    config = Config.make(
        args.quick,
        rounds=args.rounds,
        drivers=args.drivers,
        burst=args.burst,
        growth_levels=levels,
        loop_n=args.loop_n,
        peers=args.peers,
        growth=args.growth,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="waystation-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"workdir {workdir}")
    try:
        raw = Bench(config, workdir).run()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(raw["rounds"])
    levels_run = list(config.growth_levels) if config.growth else []
    rows = report.figures(summary, raw["once"], levels_run)
    goals = report.targets(summary, raw["once"], levels_run)
    print(report.table(rows, goals))
    for peer, info in raw["peers"].items():
        print(f"{peer}: {info['version'] or 'not run: ' + info['error']}")
    for note in raw["notes"]:
        print(f"note: {note}")
    if args.quick:
        print("quick mode: small counts, to prove the bench works; the figures mean little")
    raw["summary"] = summary
    raw["targets"] = [t.__dict__ for t in goals]
    raw["table_markdown"] = report.markdown(rows, goals)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(raw, indent=1) + "\n")
    print(f"results: {args.out} ({raw['seconds']:.0f}s)")
    failed = {k: v for k, v in raw["errors"].items() if not k.startswith(("mastra", "langgraph"))}
    if failed:
        print(f"Waystation calls failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
