"""End-to-end: a server of the test's own (`own_server.py`) drained under a watch (SIGTERM, as
in a rollout), then another one on the same database, where the watch goes on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from own_server import OwnServer
from waystation_client import (
    RunEvent,
    RunEventType,
    ServerDrainingError,
    UnavailableError,
    WorkflowClient,
)

DOCUMENT = {"document_id": "d-1", "title": "T", "body": "a b"}
SETTLED = RunEventType.RUN_EVENT_TYPE_RUN_SETTLED


def test_a_drain_ends_a_watch_with_the_sequence_to_watch_again_after(tmp_path: Path) -> None:
    server = OwnServer(tmp_path)
    try:
        with WorkflowClient(server.address) as client:
            started = client.start_run("document-review", input_data=DOCUMENT)
            events = client.watch_run(started.run_id, timeout=60)
            while (last := next(events)).type != SETTLED:  # SUSPENDED: the stream stays open
                pass

            began = time.monotonic()
            server.process.terminate()  # the drain; the watch waits for no more events
            with pytest.raises(ServerDrainingError) as caught:
                next(events)
            assert time.monotonic() - began < 5  # at once, not after the 10 s grace
    finally:
        server.stop()

    error = caught.value
    assert isinstance(error, UnavailableError)
    assert (error.run_id, error.after_sequence) == (started.run_id, last.sequence)

    # Another replica of the same database: watching again after it misses nothing.
    replica = OwnServer(tmp_path)
    try:
        with WorkflowClient(replica.address) as client:
            assert error.after_sequence is not None
            events = client.watch_run(started.run_id, after_sequence=error.after_sequence)
            decision = {"approved": True, "reviewer": "lee"}
            client.resume_run(started.run_id, step="review.legal-review", resume_data=decision)
            rest: list[RunEvent] = []
            while not rest or rest[-1].type != SETTLED:
                rest.append(next(events))
    finally:
        replica.stop()
    assert rest[0].sequence == last.sequence + 1
    assert RunEventType.RUN_EVENT_TYPE_STEP_RESUMED in [event.type for event in rest]
