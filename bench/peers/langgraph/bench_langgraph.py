"""The bench-cycle workload on LangGraph, in-process as its users run it: a StateGraph whose
middle node calls `interrupt()`, checkpointed by `AsyncSqliteSaver` on a file, resumed with
`Command(resume=...)`. Prints one JSON line.

    python bench_langgraph.py --db /tmp/x.db --phases warmup:20,seq:500,c64:3000,burst:1000

Runs in bench/.venv-peers (langgraph is no dependency of Waystation). `peak_mb` is the
process's VmHWM at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypedDict

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt


class State(TypedDict):
    value: int


def add(state: State) -> State:
    return {"value": state["value"] + 1}


def approve(state: State) -> State:
    answer = interrupt({"value": state["value"]})
    return {"value": answer["value"] if answer["approved"] else 0}


def finish(state: State) -> State:
    return {"value": state["value"]}


def graph() -> StateGraph[State]:
    g = StateGraph(State)
    g.add_node("add", add)
    g.add_node("approve", approve)
    g.add_node("finish", finish)
    g.add_edge(START, "add")
    g.add_edge("add", "approve")
    g.add_edge("approve", "finish")
    g.add_edge("finish", END)
    return g


class Bench:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.counter = 0
        self.errors: dict[str, Any] = {}

    def fail(self, kind: str, detail: object) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.errors.setdefault("_sample", str(detail)[:300])

    async def start(self, n: int, lat: list[float]) -> tuple[dict[str, Any], int] | None:
        t = time.perf_counter()
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        try:
            out = await self.app.ainvoke({"value": n}, config)
            got = out["__interrupt__"][0].value["value"]
        except Exception as exc:
            self.fail("start", repr(exc))
            return None
        lat.append((time.perf_counter() - t) * 1000)
        return config, got

    async def resume(self, started: tuple[dict[str, Any], int], lat: list[float]) -> bool:
        config, got = started
        t = time.perf_counter()
        try:
            out = await self.app.ainvoke(Command(resume={"approved": True, "value": got}), config)
            if out.get("value") != got or "__interrupt__" in out:
                raise ValueError(f"unexpected {out}")
        except Exception as exc:
            self.fail("resume", repr(exc))
            return False
        lat.append((time.perf_counter() - t) * 1000)
        return True

    async def cycles(self, total: int, concurrency: int) -> dict[str, Any]:
        starts: list[float] = []
        resumes: list[float] = []
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                self.counter += 1
                n = self.counter
                started = await self.start(n, starts)
                if started is not None and started[1] != n + 1:
                    self.fail("value", f"{started[1]} for {n}")
                elif started is not None:
                    await self.resume(started, resumes)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "done": len(resumes), "start_ms": starts, "resume_ms": resumes}

    async def burst(self, n: int) -> dict[str, Any]:
        lat: list[float] = []
        base, self.counter = self.counter, self.counter + n
        t0 = time.perf_counter()
        got = await asyncio.gather(*(self.start(base + i, lat) for i in range(n)))
        t1 = time.perf_counter()
        done = await asyncio.gather(*(self.resume(g, lat) for g in got if g is not None))
        t2 = time.perf_counter()
        return {
            "wall_s": t2 - t0,
            "start_wall_s": t1 - t0,
            "resume_wall_s": t2 - t1,
            "done": sum(done),
        }


def peak_mb() -> float | None:
    found = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(found.group(1)) / 1024 if found else None


async def main(db: str, phases: str) -> dict[str, Any]:
    out: dict[str, Any] = {"peer": "langgraph", "langgraph": version("langgraph"), "phases": {}}
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        bench = Bench(graph().compile(checkpointer=saver))
        for phase in phases.split(","):
            name, count = phase.split(":")
            n = int(count)
            if name == "burst":
                out["phases"][name] = await bench.burst(n)
            elif name in ("seq", "warmup"):
                out["phases"][name] = await bench.cycles(n, 1)
            elif name.startswith("c"):
                out["phases"][name] = await bench.cycles(n, int(name[1:]))
            else:
                raise SystemExit(f"unknown phase {name}")
    out["phases"].pop("warmup", None)
    out["errors"] = bench.errors
    out["peak_mb"] = peak_mb()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--phases", required=True)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.db, args.phases))))
