"""The run ids the server makes up: canonical UUIDv7 (RFC 9562), unique, in time order."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.support.api import value
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1 import service_pb2_grpc
from waystation.engine.ids import new_run_id


def millis_of(run_id: str) -> int:
    return uuid.UUID(run_id).int >> 80


def test_a_made_up_run_id_is_a_canonical_uuid7_of_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    run_id = new_run_id()
    after = time.time_ns() // 1_000_000

    parsed = uuid.UUID(run_id)
    assert str(parsed) == run_id  # canonical: lower-case hex, 8-4-4-4-12
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before <= millis_of(run_id) <= after


def test_made_up_run_ids_are_unique_and_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(5):
        made += [new_run_id() for _ in range(2_000)]
        time.sleep(0.002)

    assert len(set(made)) == len(made)
    millis = [millis_of(run_id) for run_id in made]
    assert millis == sorted(millis)
    # Ids of different milliseconds compare as their times do, as strings too.
    firsts = [made[i * 2_000] for i in range(5)]
    assert firsts == sorted(firsts)


async def test_start_run_without_a_run_id_answers_a_uuid7(
    stub: service_pb2_grpc.WorkflowServiceStub,
) -> None:
    first = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval", input_data=value({"order_id": "A-1", "amount": 5})
        )
    )
    await asyncio.sleep(0.002)
    second = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="order-approval", input_data=value({"order_id": "A-2", "amount": 5})
        )
    )

    assert uuid.UUID(first.run_id).version == 7
    assert first.run_id < second.run_id
    got = await stub.GetRun(rr.GetRunRequest(run_id=first.run_id))
    assert got.run_id == first.run_id
