"""`python -m bench.instructions REV_A REV_B [--cycles 300]`: the instructions one bench cycle
costs the engine and the SQLite store, in-process, for two revisions, counted by valgrind.

On the shared 2-core machines here a timed A/B (`bench.ab`) moves by 10-20 % from round to
round, more than most single changes are worth. An instruction count does not: valgrind
(`cachegrind`, no cache simulation) counts every instruction the process runs, in every
thread, and a repeat lands within 0.3 %. It says nothing about waiting (the fsync, the disk)
or about gRPC, so it judges CPU work in the engine and the store, and `bench.ab` judges the
rest. Each revision is checked out into a temporary git worktree and runs the cycles of
`bench.workflows.cycle` (StartRun until it suspends, ResumeRun until it succeeds) against
a SQLite file, once with WARMUP cycles and once with WARMUP + `--cycles`; the difference,
divided by `--cycles`, is one cycle's count (start-up and imports cancel out). Needs
`valgrind` on PATH; takes about a minute per revision.

With `--grpc`, the count is the server process's instead, over real gRPC: `waystation serve`
runs under valgrind and a client in this process makes the cycles, one call at a time; the
bench's echo server is counted the same way, per call, as the floor. The count then covers
grpc.aio's call handling, the transport layer and the engine; divided by the echo's count per
call it is what the concurrency-64 target asks of the server's CPU (a cycle is two calls:
reaching half the echo's rate needs a cycle to cost at most four echo calls).

`per_iteration` counts the same way what one iteration of the long loop (or one item of the
long foreach) costs near the start of a run and near its end; `python -m bench` uses it for
its growth targets next to the timed ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench import procs
from bench.driver import value
from waystation.api.v1 import message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 50


async def cycles(n: int, directory: str) -> None:
    """Run `n` bench cycles in-process (the child's side)."""
    from bench.workflows import cycle
    from waystation.engine import Engine, ResumeCommand, StartCommand
    from waystation.storage.sqlite import SqliteStore

    store = SqliteStore(os.path.join(directory, "store.db"))
    await store.setup()
    engine = Engine(store, [cycle])
    await engine.start()
    try:
        for _ in range(n):
            started = await engine.start_run(
                StartCommand(workflow_id="bench-cycle", input_data={"value": 1})
            )
            done = await engine.resume_run(
                ResumeCommand(started.run_id, resume_data={"approved": True, "value": 2})
            )
            assert done.status.value == "success", done
    finally:
        await engine.close()
        await store.close()


LONG_RUNS = {
    "loop": ("bench-loop", lambda n: {"i": 0, "n": n}),
    "foreach": ("bench-foreach", lambda n: {"n": n}),
}
"""The long-run workflows of `bench.workflows`, and their input for `n` iterations."""


async def long_run(shape: str, n: int, directory: str) -> None:
    """One run of `bench-loop` or `bench-foreach` with `n` iterations, in-process (the
    child's side), its times not recorded. The store is left open: closing it checkpoints
    what the WAL holds, which depends on where in the WAL's cycle the run ended, not on how
    many iterations it made (the child exits at once instead)."""
    from bench import workflows
    from waystation.engine import Engine, StartCommand
    from waystation.storage.sqlite import SqliteStore

    workflows.RECORD_TIMES = False
    workflow_id, data = LONG_RUNS[shape]
    store = SqliteStore(os.path.join(directory, "store.db"))
    await store.setup()
    engine = Engine(store, [workflows.loop, workflows.fanout])
    await engine.start()
    done = await engine.start_run(StartCommand(workflow_id=workflow_id, input_data=data(n)))
    assert done.status.value == "success", done


VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def count(server_tree: Path, n: int, shape: str = "cycle") -> int:
    """Instructions of a child process that runs `n` cycles (or one `shape` run of `n`
    iterations: "loop", "foreach") with `server_tree`'s engine."""
    with tempfile.TemporaryDirectory(prefix="waystation-instructions-") as scratch:
        child = [sys.executable, "-m", "bench.instructions", "--child", str(n), scratch, shape]
        done = subprocess.run(
            [*VALGRIND, *child],
            cwd=ROOT,
            env=_env(server_tree),
            capture_output=True,
            text=True,
            check=True,
        )
    return _instructions(done.stderr)


def per_iteration(server_tree: Path, shape: str, n: int, width: int) -> tuple[float, float]:
    """Instructions of one iteration of a `shape` run ("loop", "foreach") near its start
    (iterations 10 to 10 + `width`) and near its end (the last `width` of `n`): each the
    difference of two whole runs, `width` iterations apart, divided by `width`. Runs of
    both lengths do the same start-up and the same last step, so only the iterations in
    between remain."""
    lengths = (10, 10 + width, n - width, n)
    with ThreadPoolExecutor(2) as pool:  # one count per core
        a, b, c, d = pool.map(lambda k: count(server_tree, k, shape), lengths)
    return (b - a) / width, (d - c) / width


def count_served(argv: list[str], env: dict[str, str], calls: Callable[[str], None]) -> int:
    """Instructions of a server process (`argv` plus `--port`/`--listen` as `serve` needs)
    from its start to its graceful stop, while `calls(target)` runs against it."""
    port = procs.free_port()
    listen = ["--port", str(port)] if "bench.echo" in argv else ["--listen", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*VALGRIND, sys.executable, *argv, *listen],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        calls(f"127.0.0.1:{port}")
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=600)
    return _instructions(stderr)


def cycles_over_grpc(n: int) -> Callable[[str], None]:
    def calls(target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=300)
            stub = WorkflowServiceStub(channel)
            for _ in range(n):
                started = stub.StartRun(
                    rr.StartRunRequest(workflow_id="bench-cycle", input_data=value({"value": 1}))
                )
                stub.ResumeRun(
                    rr.ResumeRequest(
                        run_id=started.run_id, resume_data=value({"approved": True, "value": 2})
                    )
                )

    return calls


def echoes(n: int) -> Callable[[str], None]:
    def calls(target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=300)
            echo = channel.unary_unary(
                "/bench.Echo/Echo",
                request_serializer=rr.GetWorkflowRequest.SerializeToString,
                response_deserializer=message_pb2.Workflow.FromString,
            )
            for _ in range(n):
                echo(rr.GetWorkflowRequest(workflow_id="x"))

    return calls


def per_cycle(server_tree: Path, n: int, over_grpc: bool) -> float:
    def one(k: int) -> int:
        if not over_grpc:
            return count(server_tree, k)
        with tempfile.TemporaryDirectory(prefix="waystation-instructions-") as scratch:
            argv = ["-m", "waystation.cli", "serve", "--db", f"sqlite:///{scratch}/store.db"]
            argv += ["--workflows", "bench.workflows", "--log-level", "warning"]
            return count_served(argv, _env(server_tree), cycles_over_grpc(k))

    return _difference(one, n)


def per_echo(n: int) -> float:
    return _difference(
        lambda k: count_served(["-m", "bench.echo"], procs.child_env(), echoes(k)), n
    )


def _difference(one: Callable[[int], int], n: int) -> float:
    with ThreadPoolExecutor(2) as pool:  # the two counts in parallel: one per core
        short, long = pool.map(one, (WARMUP, WARMUP + n))
    return (long - short) / n


def _env(server_tree: Path) -> dict[str, str]:
    return {**procs.child_env(), "PYTHONPATH": os.pathsep.join([str(server_tree), str(ROOT)])}


def _instructions(stderr: str) -> int:
    found = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("a", nargs="?", help="the baseline revision")
    p.add_argument("b", nargs="?", help="the revision to compare with it")
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--grpc", action="store_true", help="count the server over gRPC")
    p.add_argument("--child", nargs=3, metavar=("N", "DIR", "SHAPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        n, directory, shape = int(args.child[0]), args.child[1], args.child[2]
        if shape == "cycle":
            asyncio.run(cycles(n, directory))
            return
        asyncio.run(long_run(shape, n, directory))
        os._exit(0)  # no clean-up at exit either: the store stays open (see long_run)
    if not (args.a and args.b):
        p.error("give two revisions")
    if shutil.which("valgrind") is None:
        p.error("valgrind is not installed")
    results = {}
    with (
        tempfile.TemporaryDirectory(prefix="waystation-instructions-") as scratch,
        procs.worktrees({"A": args.a, "B": args.b}, Path(scratch)) as trees,
    ):
        for name, tree in trees.items():
            results[name] = per_cycle(tree / "server", args.cycles, args.grpc)
            print(f"{name}: {results[name] / 1e6:.3f} M instructions per cycle", flush=True)
    print(f"B/A {results['B'] / results['A']:.3f}")
    if args.grpc:
        echo = per_echo(2 * args.cycles)
        print(f"echo server: {echo / 1e6:.3f} M instructions per call", flush=True)
        for name in results:
            print(f"{name}: a cycle costs the server {results[name] / echo:.1f} echo calls")


if __name__ == "__main__":
    main()
