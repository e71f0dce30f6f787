"""The crash suite's load: clients start and resume runs of `crash-load` while a killer sends
SIGKILL to the server at random moments (seeded) and restarts it on the same port and file.

Every call the clients make is logged with what the caller knows of it:
- `ok`: acknowledged (StartRun: the run exists; ResumeRun: the gate has the data);
- `unknown`: DEADLINE_EXCEEDED, UNAVAILABLE or cut off by the end of the load: it may or may
  not have taken effect; the client retries it with the same request id;
- `rejected`: ABORTED or FAILED_PRECONDITION (the run is not at the gate yet): tried again;
- `error`: any other status, which this workload never provokes (the checker reports it).

After the last kill and restart the driver waits until no run is RUNNING, WAITING or PENDING
and reads every run back through GetRun; `checker.check` then judges the whole history.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from tests.crash.checker import Call, Line, StoredRun, StoredStep, parse_lines
from tests.crash.flows import LOAD_GATES
from tests.support.api import path, value
from tests.support.server_process import ServerProcess
from waystation.api.v1 import enums_pb2, service_pb2_grpc
from waystation.api.v1 import request_response_pb2 as rr

Stub = service_pb2_grpc.WorkflowServiceStub
ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = "crash-load"

AMBIGUOUS = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
NOT_YET = {grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION}
UNSETTLED = [
    enums_pb2.RUN_STATUS_RUNNING,
    enums_pb2.RUN_STATUS_WAITING,
    enums_pb2.RUN_STATUS_PENDING,
]

# A restarted server listens on the same port: reconnect within 50-200 ms.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


@dataclass
class LoadConfig:
    seed: int
    kills: int
    workers: int = 6
    work: float = 0.05
    """Seconds each step sleeps between its start and done lines."""
    uptime: tuple[float, float] = (0.2, 1.2)
    """A kill comes this many seconds (uniform) after the server is healthy again."""
    short_deadlines: float = 0.15
    """The share of calls made with a 20-300 ms deadline (accepted but not answered)."""
    deadline: float = 5.0
    settle_timeout: float = 30.0
    progress: Callable[[str], None] | None = None


@dataclass
class LoadResult:
    seed: int
    kills: int
    directory: Path
    calls: list[Call]
    runs: dict[str, StoredRun | None]
    """Every run id a client used, as read back after the last restart (None: not found)."""
    stored_ids: set[str]
    """Every run id in the store (ListRuns), to find runs nobody asked for."""
    logs: dict[str, list[Line]]
    pids: list[int] = field(default_factory=list)
    """The server processes in order; all but the last were killed."""
    seconds: float = 0.0


class CallLog:
    """Calls in order, in memory and appended to calls.jsonl (for a post-mortem)."""

    def __init__(self, file: Path) -> None:
        self.calls: list[Call] = []
        self._file = file

    def add(self, call: Call) -> None:
        self.calls.append(call)
        with self._file.open("a") as f:
            f.write(json.dumps(asdict(call)) + "\n")


class Client:
    """One worker: runs crash-load runs one after another, start -> gate1 -> gate2."""

    def __init__(
        self, stub: Stub, config: LoadConfig, log: CallLog, logs_dir: Path, worker: int
    ) -> None:
        self.stub, self.config, self.log, self.logs_dir = stub, config, log, logs_dir
        self.worker = worker
        self.rng = random.Random(config.seed * 1000 + worker)
        self.run_ids: list[str] = []

    async def drive(self) -> None:
        for n in range(1_000_000):
            run_id = f"s{self.config.seed}-w{self.worker}-{n}"
            self.run_ids.append(run_id)
            if not await self.start(run_id):
                continue
            for gate in LOAD_GATES:
                if not await self.resume(run_id, gate, self.rng.randrange(1, 1_000_000)):
                    break

    async def start(self, run_id: str) -> bool:
        log = self.logs_dir / f"{run_id}.log"
        request = rr.StartRunRequest(
            workflow_id=WORKFLOW,
            run_id=run_id,
            input_data=value({"log": str(log), "work": self.config.work}),
            request_id=f"start-{run_id}",
            return_immediately=self.rng.random() < 0.5,
        )
        return await self._until_ok(
            Call("start", run_id), lambda timeout: self.stub.StartRun(request, timeout=timeout)
        )

    async def resume(self, run_id: str, gate: str, data: int) -> bool:
        request = rr.ResumeRequest(
            run_id=run_id,
            step=path(gate),
            resume_data=value({"value": data}),
            request_id=f"resume-{run_id}-{gate}",
        )
        return await self._until_ok(
            Call("resume", run_id, gate, data),
            lambda timeout: self.stub.ResumeRun(request, timeout=timeout),
        )

    async def _until_ok(self, call: Call, send: Callable[[float], Awaitable[Any]]) -> bool:
        """Send until acknowledged; False when the run is left: after an unexpected status,
        or after 300 tries (a gate that never became resumable: logged as an error too)."""
        for _ in range(300):
            short = self.rng.random() < self.config.short_deadlines
            timeout = self.rng.uniform(0.02, 0.3) if short else self.config.deadline
            try:
                await send(timeout)
            except asyncio.CancelledError:
                self.log.add(call.with_outcome("unknown", "CANCELLED"))
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                outcome = _classify(code)
                self.log.add(call.with_outcome(outcome, code.name, exc.details() or ""))
                if outcome == "error":
                    return False
                await asyncio.sleep(self.rng.uniform(0.05, 0.2))
                continue
            self.log.add(call.with_outcome("ok", "OK"))
            return True
        self.log.add(call.with_outcome("error", "GAVE_UP", "not acknowledged after 300 tries"))
        return False


def _classify(code: grpc.StatusCode) -> str:
    if code in AMBIGUOUS:
        return "unknown"
    return "rejected" if code in NOT_YET else "error"


async def run_load(directory: Path, config: LoadConfig) -> LoadResult:
    """Run the load with `config.kills` SIGKILLs (the last one after the load stopped), then
    read back every run. Everything is kept in `directory`."""
    began = time.monotonic()
    logs_dir = _make_directories(directory)
    server = ServerProcess(
        directory / "crash.db",
        workflows=["tests.crash.flows"],
        env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        },
    )
    log = CallLog(directory / "calls.jsonl")
    pids: list[int] = []
    try:
        await _restart(server, pids, kill=False)
        async with grpc.aio.insecure_channel(server.address, options=FAST_RECONNECT) as channel:
            stub = Stub(channel)
            clients = [
                Client(stub, config, log, logs_dir, worker) for worker in range(config.workers)
            ]
            workers = [asyncio.create_task(c.drive()) for c in clients]
            try:
                await _kill_repeatedly(server, pids, config, config.kills - 1)
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
            await _restart(server, pids, kill=True)  # the last kill: nothing in flight
            run_ids = [run_id for c in clients for run_id in c.run_ids]
            await _settle(stub, config.settle_timeout)
            runs = {run_id: await _read_run(stub, run_id) for run_id in run_ids}
            stored_ids = await _stored_ids(stub)
    finally:
        if server.running:
            server.kill()
    logs = _read_logs(logs_dir, runs)
    seconds = time.monotonic() - began
    return LoadResult(
        config.seed, config.kills, directory, log.calls, runs, stored_ids, logs, pids, seconds
    )


def _make_directories(directory: Path) -> Path:
    """`directory` and its `runs` folder (the side-effect logs, one file per run)."""
    logs_dir = directory / "runs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    return logs_dir


def _read_logs(logs_dir: Path, run_ids: Iterable[str]) -> dict[str, list[Line]]:
    files = {run_id: logs_dir / f"{run_id}.log" for run_id in run_ids}
    return {
        run_id: parse_lines(file.read_text()) if file.exists() else []
        for run_id, file in files.items()
    }


async def _kill_repeatedly(
    server: ServerProcess, pids: list[int], config: LoadConfig, kills: int
) -> None:
    rng = random.Random(config.seed)
    for n in range(1, kills + 1):
        await asyncio.sleep(rng.uniform(*config.uptime))
        await _restart(server, pids, kill=True)
        if config.progress is not None and n % 20 == 0:
            config.progress(f"{n} kills")


async def _restart(server: ServerProcess, pids: list[int], *, kill: bool) -> None:
    if kill:
        await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)
    process = server._process  # the Popen of the process just started
    assert process is not None
    pids.append(process.pid)


async def _settle(stub: Stub, timeout: float) -> None:
    """Wait until no run is RUNNING, WAITING or PENDING (or `timeout` passes: the checker
    then reports the runs that never settled). The reads after the last restart wait for
    the channel to reconnect (wait_for_ready) instead of failing in its backoff."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = rr.ListRunsRequest(statuses=UNSETTLED, page_size=1)
        busy = await stub.ListRuns(request, timeout=5, wait_for_ready=True)
        if not busy.runs:
            return
        await asyncio.sleep(0.1)


async def _read_run(stub: Stub, run_id: str) -> StoredRun | None:
    try:
        run = await stub.GetRun(rr.GetRunRequest(run_id=run_id), timeout=5, wait_for_ready=True)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    steps = {
        step_id: StoredStep(
            status=enums_pb2.StepStatus.Name(step.status).removeprefix("STEP_STATUS_"),
            output=_json(step, "output"),
            resume_payload=_json(step, "resume_payload"),
        )
        for step_id, step in run.result.steps.items()
    }
    status = enums_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_")
    return StoredRun(status, steps, run.result.error.message)


def _json(message: Any, name: str) -> Any:
    if not message.HasField(name):
        return None
    return json_format.MessageToDict(getattr(message, name))


async def _stored_ids(stub: Stub) -> set[str]:
    ids: set[str] = set()
    token = ""
    while True:
        request = rr.ListRunsRequest(page_size=500, page_token=token)
        page = await stub.ListRuns(request, timeout=10, wait_for_ready=True)
        ids.update(run.run_id for run in page.runs)
        token = page.next_page_token
        if not token:
            return ids


def default_directory(seed: int) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"waystation-crash-{seed}-{os.getpid()}"
