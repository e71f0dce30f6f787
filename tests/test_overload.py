"""A server under more calls than it can take up at once, through a real server.

grpc.aio takes a new call off gRPC core's queue once per turn of the event loop; when the
loop is busy, calls wait there. The hog workflow holds the loop for a while in each step,
as CPU-bound steps do, so that calls pile up in a few seconds of a test.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import serving, settings_for
from tests.support.api import value
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub


async def _flood(
    stub: WorkflowServiceStub, calls: int, workflow_id: str, seconds: float
) -> Counter[str]:
    """`calls` StartRuns at once; the status code each one ended with."""

    async def one() -> str:
        request = rr.StartRunRequest(
            workflow_id=workflow_id, input_data=value({"seconds": seconds})
        )
        try:
            await stub.StartRun(request)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return "OK"

    return Counter(await asyncio.gather(*(one() for _ in range(calls))))


async def _timed(call: asyncio.Future[object] | object) -> float:
    began = time.monotonic()
    await call  # type: ignore[misc]
    return time.monotonic() - began


async def test_health_answers_while_starts_wait_to_be_taken_up(db_path: Path) -> None:
    """40 StartRuns that each hold the loop 0.1 s wait about 4 s to be taken up. A health
    check sent meanwhile waited behind all of them (every method shared one queue in gRPC's
    core): a Kubernetes probe with its 1 s timeout failed under load."""
    async with (
        serving(settings_for(db_path)) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = WorkflowServiceStub(channel)
        flood = asyncio.ensure_future(_flood(stub, 40, "hog", 0.1))
        await asyncio.sleep(0.5)  # the flood is on its way, and waits in core's queue
        health = health_pb2_grpc.HealthStub(channel)
        checked = await _timed(health.Check(health_pb2.HealthCheckRequest(), timeout=5))
        assert not flood.done()
        assert checked < 1.0, checked
        assert await flood == Counter(OK=40)


async def test_a_backlog_of_calls_waits_instead_of_being_cancelled(db_path: Path) -> None:
    """While one step holds the loop for 2 s, 2,500 StartRuns arrive. gRPC's own default
    backlog (1,000 calls, then a growing share cancelled up to 3,000) answered most of the
    excess with a bare CANCELLED; the server's backlog is 10,000 (--max-pending-calls), and
    a server given a smaller one cancels past it."""
    for pending, cancelled in ((10_000, False), (100, True)):
        settings = settings_for(db_path, max_pending_calls=pending)
        async with (
            serving(settings) as server,
            grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            stub = WorkflowServiceStub(channel)
            hog = asyncio.ensure_future(
                stub.StartRun(
                    rr.StartRunRequest(workflow_id="hog", input_data=value({"seconds": 2}))
                )
            )
            await asyncio.sleep(0.2)  # the loop is held from here on
            codes = await _flood(stub, 2_500, "no-such-workflow", 0)
            await hog
        assert set(codes) <= {"NOT_FOUND", "CANCELLED"}, codes
        assert ("CANCELLED" in codes) is cancelled, (pending, codes)
