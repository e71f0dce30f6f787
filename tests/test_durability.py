"""Durability across real server processes on one SQLite file: a process killed with SIGKILL
loses nothing that was committed, a restarted process continues interrupted runs, and
SIGTERM drains calls in flight. Steps count their side effects in log files, so "ran exactly
once" is checked across processes (DESIGN.md §4, STYLE.md rule 21)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.api import assert_eventually, call_error, paths, to_json, value
from tests.support.server_process import ServerProcess, client, kill, start
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2, service_pb2_grpc
from waystation.api.v1 import request_response_pb2 as rr
from waystation.engine.engine import STOP_WAIT

Stub = service_pb2_grpc.WorkflowServiceStub
GRACE = 5.0

# A restarted server listens on the same port: reconnect quickly, not after seconds.


@pytest.fixture
def process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "durable.db",
        workflows=["tests.support.workflows"],
        extra_args=["--grace", str(GRACE)],
    )
    try:
        yield server
    finally:
        if server.running:
            server.kill()


def logged(log: Path, seconds: float = 0.0) -> Any:
    return value({"log": str(log), "seconds": seconds})


async def run_status(stub: Stub, run_id: str) -> int:
    return (await stub.GetRun(rr.GetRunRequest(run_id=run_id))).status


async def eventually_status(stub: Stub, run_id: str, status: int, timeout: float = 10) -> None:
    async def reached() -> bool:
        return await run_status(stub, run_id) == status

    await assert_eventually(reached, timeout=timeout)


async def resume(stub: Stub, run_id: str, data: Any, **fields: Any) -> message_pb2.WorkflowResult:
    return await stub.ResumeRun(rr.ResumeRequest(run_id=run_id, resume_data=value(data), **fields))


async def test_suspended_runs_survive_sigkill_and_resume_in_a_new_process(
    process: ServerProcess, tmp_path: Path
) -> None:
    """Runs suspended when the process is killed with SIGKILL (flat and nested, one of them
    already resumed once) resume to SUCCESS in a new process on the same file; no step that
    completed before the crash runs again, and every step ran exactly once."""
    logs = {name: tmp_path / f"{name}.log" for name in ("c-0", "c-1", "c-2", "n-0", "n-1")}
    await start(process)
    async with client(process) as stub:
        started = await asyncio.gather(
            *(
                stub.StartRun(
                    rr.StartRunRequest(
                        workflow_id="nested-counted" if run_id.startswith("n") else "counted",
                        run_id=run_id,
                        input_data=logged(log),
                    )
                )
                for run_id, log in logs.items()
            )
        )
        assert all(r.status == enums_pb2.RUN_STATUS_SUSPENDED for r in started)
        halfway = await resume(
            stub, "n-0", {"ok": True}, step=message_pb2.StepPath(segments=["inner", "a"])
        )
        assert paths(halfway) == [["inner", "b"]]

    await kill(process)
    await start(process)

    async with client(process) as stub:
        for i in range(3):
            done = await resume(stub, f"c-{i}", {"value": i})
            assert done.status == enums_pb2.RUN_STATUS_SUCCESS
            assert to_json(done.result) == {"value": i + 1}
        assert paths(await resume(stub, "n-1", {"ok": True})) == [["inner", "b"]]
        for i in range(2):
            done = await resume(stub, f"n-{i}", {"n": i}, label="inner-b")
            assert done.status == enums_pb2.RUN_STATUS_SUCCESS
            assert to_json(done.result) == {"n": i, "done": True}

    for i in range(3):
        assert Counter(lines(logs[f"c-{i}"])) == {"one": 1, "gate": 1, "two": 1}
    for i in range(2):
        assert Counter(lines(logs[f"n-{i}"])) == {"one": 1, "a": 1, "b": 1, "last": 1}


async def test_sigterm_lets_the_call_in_flight_finish_and_refuses_new_calls(
    process: ServerProcess, tmp_path: Path
) -> None:
    """On SIGTERM the server stops taking calls (a new call is refused UNAVAILABLE while the
    old one is still in flight), lets the StartRun in flight finish with SUCCESS, and exits
    with code 0 within the grace period."""
    log = tmp_path / "slow.log"
    await start(process)
    async with client(process) as stub:

        async def start_slow() -> message_pb2.WorkflowResult:
            return await stub.StartRun(
                rr.StartRunRequest(workflow_id="slow", run_id="drain", input_data=logged(log, 2.0))
            )

        in_flight = asyncio.create_task(start_slow())

        async def running() -> bool:
            try:
                return await run_status(stub, "drain") == enums_pb2.RUN_STATUS_RUNNING
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    return False
                raise

        await assert_eventually(running)
        signalled = time.monotonic()
        stopped = asyncio.create_task(asyncio.to_thread(process.stop, signal.SIGTERM, 15))

        async def refused() -> bool:
            """Whether a new call on a new connection is refused (until the signal lands, it
            is still answered). A call that gets no answer in time is tried again: a short
            deadline, so that a stuck try does not use up the step's time."""
            async with grpc.aio.insecure_channel(process.address) as fresh:
                try:
                    await Stub(fresh).GetRun(rr.GetRunRequest(run_id="drain"), timeout=0.25)
                except grpc.aio.AioRpcError as exc:
                    return exc.code() is grpc.StatusCode.UNAVAILABLE
            return False

        await assert_eventually(refused, timeout=5)
        assert not in_flight.done(), "the call in flight ended before new calls were refused"

        result = await in_flight
        assert result.status == enums_pb2.RUN_STATUS_SUCCESS
        assert to_json(result.result) == {"slept": 2.0}
        assert await stopped == 0
        assert time.monotonic() - signalled < GRACE
    assert lines(log) == ["slow"]


async def test_a_step_that_ignores_its_cancellation_is_left_behind_by_cancel_and_sigterm(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A step catches its cancellation and goes on (a catch-everything poller). CancelRun
    answers CANCELED once the step has had its few seconds, the run is CANCELED and can
    be deleted; a second such run does not hold SIGTERM past the grace and those seconds.
    An outside audit found CancelRun never answered, the run could never be cancelled or
    deleted, and the server, told to stop, was still running twelve minutes later."""
    logs = [tmp_path / f"stubborn-{i}.log" for i in range(2)]
    await start(process)
    async with client(process) as stub:
        started = []
        for log in logs:
            data = value({"log": str(log), "seconds": 60})
            started.append(
                await stub.StartRun(
                    rr.StartRunRequest(
                        workflow_id="stubborn", input_data=data, return_immediately=True
                    )
                )
            )

        async def polling() -> bool:
            return all(lines(log) == ["polling"] for log in logs)

        await assert_eventually(polling)
        asked = time.monotonic()
        canceled = await stub.CancelRun(rr.CancelRunRequest(run_id=started[0].run_id), timeout=20)
        assert canceled.status == enums_pb2.RUN_STATUS_CANCELED
        assert time.monotonic() - asked < STOP_WAIT + 3
        assert await run_status(stub, started[0].run_id) == enums_pb2.RUN_STATUS_CANCELED
        await stub.DeleteRun(rr.DeleteRunRequest(run_id=started[0].run_id))

    signalled = time.monotonic()
    assert await asyncio.to_thread(process.stop, signal.SIGTERM, 40) == 0
    assert time.monotonic() - signalled < GRACE + STOP_WAIT + 5
    assert "did not stop within" in process.log
    assert [lines(log) for log in logs] == [["polling"], ["polling"]]


async def test_a_run_interrupted_inside_a_resumed_step_is_continued_at_startup(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A run killed with SIGKILL while a resumed step runs (its caller's deadline already
    expired) is continued by the next process at start-up without any call: it shows RUNNING,
    then SUCCESS with the resume data that was accepted, and each step ran exactly once."""
    log = tmp_path / "counted.log"
    await start(process)
    async with client(process) as stub:
        started = await stub.StartRun(
            rr.StartRunRequest(workflow_id="counted", run_id="crash", input_data=logged(log, 3))
        )
        assert started.status == enums_pb2.RUN_STATUS_SUSPENDED
        expired = await call_error(
            stub.ResumeRun(
                rr.ResumeRequest(run_id="crash", resume_data=value({"value": 7})), timeout=0.3
            )
        )
        assert expired.code == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually_status(stub, "crash", enums_pb2.RUN_STATUS_RUNNING)
        assert lines(log) == ["one"]

    await kill(process)
    await start(process)

    async with client(process) as stub:
        assert await run_status(stub, "crash") == enums_pb2.RUN_STATUS_RUNNING
        await eventually_status(stub, "crash", enums_pb2.RUN_STATUS_SUCCESS, timeout=15)
        run = await stub.GetRun(rr.GetRunRequest(run_id="crash"))
        assert to_json(run.result.result) == {"value": 8}
    assert Counter(lines(log)) == {"one": 1, "gate": 1, "two": 1}


async def test_a_run_interrupted_in_its_first_execution_is_continued_at_startup(
    process: ServerProcess, tmp_path: Path
) -> None:
    """A run started with return_immediately and killed with SIGKILL while its step runs is
    continued by the next process at start-up and finishes SUCCESS; its side effect is
    recorded once."""
    log = tmp_path / "slow.log"
    await start(process)
    async with client(process) as stub:
        started = await stub.StartRun(
            rr.StartRunRequest(
                workflow_id="slow",
                run_id="cut-short",
                input_data=logged(log, 2),
                return_immediately=True,
            )
        )
        assert started.status == enums_pb2.RUN_STATUS_RUNNING
        await eventually_status(stub, "cut-short", enums_pb2.RUN_STATUS_RUNNING)

    await kill(process)
    assert lines(log) == []
    await start(process)

    async with client(process) as stub:
        await eventually_status(stub, "cut-short", enums_pb2.RUN_STATUS_SUCCESS, timeout=15)
        run = await stub.GetRun(rr.GetRunRequest(run_id="cut-short"))
        assert to_json(run.result.result) == {"slept": 2.0}
    assert lines(log) == ["slow"]
