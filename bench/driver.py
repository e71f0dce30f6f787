"""The load driver: a client process that calls a server over real gRPC.

`python -m bench.driver --target HOST:PORT` connects, prints `{"ready": true}`, then reads one
JSON command per line on stdin and answers one JSON line on stdout per command, so that the
orchestrator can start several drivers and release them together (a barrier between the
start and the resume phases of a burst). Every answer carries `t0` / `t1`
(`time.perf_counter()`, which is CLOCK_MONOTONIC and so comparable across processes), the
latencies in milliseconds, and the errors by status code.

Commands (`op`):
- `echo`: `calls` unary echo calls by `concurrency` workers.
- `cycles`: `cycles` bench-cycle cycles (StartRun until SUSPENDED, ResumeRun until SUCCESS)
  by `concurrency` workers; latencies of each call.
- `start_many` / `resume_many`: start `runs` runs all at once and keep their ids; then
  resume them all at once.
- `resume_ids`: resume the given suspended runs (seeded ones) one after another.
- `run`: start one run of `workflow` with `input` and answer its result (loop timings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from bench.echo import METHOD
from waystation.api.v1 import (
    enums_pb2,
    message_pb2,
    request_response_pb2,
    service_pb2_grpc,
)

rr = request_response_pb2
SUSPENDED = enums_pb2.RUN_STATUS_SUSPENDED
SUCCESS = enums_pb2.RUN_STATUS_SUCCESS
CYCLE = "bench-cycle"


def value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


class Failed(Exception):
    """A call answered, but not as the workload expects."""


class Driver:
    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self.stub = service_pb2_grpc.WorkflowServiceStub(self.channel)
        self.echo_call = self.channel.unary_unary(
            METHOD,
            request_serializer=rr.GetWorkflowRequest.SerializeToString,
            response_deserializer=message_pb2.Workflow.FromString,
        )
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []
        self.suspended: list[tuple[str, int]] = []
        self.counter = 0

    def _error(self, exc: BaseException) -> None:
        name = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        self.errors[name] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{name}: {exc}"[:300])

    async def _timed(self, lat: list[float], call: Callable[[], Awaitable[Any]]) -> Any:
        t = time.perf_counter()
        try:
            out = await call()
        except (grpc.aio.AioRpcError, Failed) as exc:
            self._error(exc)
            return None
        lat.append((time.perf_counter() - t) * 1000)
        return out

    # -- calls ----------------------------------------------------------------------------

    async def start(self, n: int, lat: list[float]) -> tuple[str, int] | None:
        async def call() -> tuple[str, int]:
            res = await self.stub.StartRun(
                rr.StartRunRequest(workflow_id=CYCLE, input_data=value({"value": n}))
            )
            if res.status != SUSPENDED:
                raise Failed(f"StartRun answered {res.status}, not SUSPENDED: {res.error}")
            payload = json_format.MessageToDict(res.suspend_payload["approve"])
            return res.run_id, int(payload["value"])

        out: tuple[str, int] | None = await self._timed(lat, call)
        return out

    async def resume(self, run_id: str, got: int, lat: list[float]) -> bool:
        async def call() -> bool:
            res = await self.stub.ResumeRun(
                rr.ResumeRequest(run_id=run_id, resume_data=value({"approved": True, "value": got}))
            )
            if res.status != SUCCESS:
                raise Failed(f"ResumeRun answered {res.status}, not SUCCESS: {res.error}")
            if json_format.MessageToDict(res.result) != {"value": got}:
                raise Failed(f"wrong result {json_format.MessageToDict(res.result)}")
            return True

        return bool(await self._timed(lat, call))

    async def cycle(
        self, lat_start: list[float], lat_resume: list[float], lat: list[float]
    ) -> None:
        self.counter += 1
        n = self.counter
        t = time.perf_counter()
        started = await self.start(n, lat_start)
        if started is None:
            return
        if started[1] != n + 1:
            self._error(Failed(f"step 1 gave {started[1]} for {n}"))
            return
        if await self.resume(*started, lat_resume):
            lat.append((time.perf_counter() - t) * 1000)

    # -- commands -------------------------------------------------------------------------

    async def _workers(
        self, total: int, concurrency: int, one: Callable[[], Awaitable[None]]
    ) -> None:
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))

    async def op_echo(self, calls: int, concurrency: int) -> dict[str, Any]:
        lat: list[float] = []

        async def one() -> None:
            await self._timed(lat, lambda: self.echo_call(rr.GetWorkflowRequest(workflow_id="x")))

        await self._workers(calls, concurrency, one)
        return {"lat": lat}

    async def op_cycles(self, cycles: int, concurrency: int) -> dict[str, Any]:
        starts: list[float] = []
        resumes: list[float] = []
        whole: list[float] = []
        await self._workers(cycles, concurrency, lambda: self.cycle(starts, resumes, whole))
        return {"start": starts, "resume": resumes, "cycle": whole}

    async def op_start_many(self, runs: int) -> dict[str, Any]:
        lat: list[float] = []
        base = self.counter
        self.counter += runs
        got = await asyncio.gather(*(self.start(base + i, lat) for i in range(runs)))
        self.suspended = [g for g in got if g is not None]
        return {"start": lat}

    async def op_resume_many(self) -> dict[str, Any]:
        lat: list[float] = []
        todo, self.suspended = self.suspended, []
        await asyncio.gather(*(self.resume(run_id, v, lat) for run_id, v in todo))
        return {"resume": lat}

    async def op_resume_ids(self, ids: list[str], expect: int) -> dict[str, Any]:
        lat: list[float] = []
        for run_id in ids:
            await self.resume(run_id, expect, lat)
        return {"resume": lat}

    async def op_run(self, workflow: str, input: Any) -> dict[str, Any]:
        res = await self.stub.StartRun(
            rr.StartRunRequest(workflow_id=workflow, input_data=value(input)),
            timeout=1800,
        )
        if res.status != SUCCESS:
            raise Failed(f"{workflow} answered {res.status}: {res.error}")
        return {"result": json_format.MessageToDict(res.result)}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.pop("op")
        self.errors.clear()
        self.samples.clear()
        t0 = time.perf_counter()
        out = await getattr(self, f"op_{op}")(**command)
        t1 = time.perf_counter()
        return {**out, "t0": t0, "t1": t1, "errors": dict(self.errors), "samples": self.samples}


async def main_async(target: str) -> None:
    driver = Driver(target)
    await asyncio.wait_for(driver.channel.channel_ready(), 30)
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        try:
            answer = await driver.handle(json.loads(line))
        except Exception as exc:
            answer = {"fatal": f"{type(exc).__name__}: {exc}"[:2000]}
        print(json.dumps(answer), flush=True)
    await driver.channel.close(None)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench load driver")
    parser.add_argument("--target", required=True)
    asyncio.run(main_async(parser.parse_args().target))


if __name__ == "__main__":
    main()
