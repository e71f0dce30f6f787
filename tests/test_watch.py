"""WatchRun through a real server: a stream of RunEvents with increasing `sequence`.

Events are stored with the run, so a watch opened after the fact replays the history; a
live watch ends after the RUN_SETTLED of a final status; a client that reconnects with
`after_sequence` gets exactly the events it missed, each once and in order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import FLOW_WORKFLOWS, settings_for
from tests.support.api import assert_eventually, call_error, to_json, value
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.engine import Engine, ResumeCommand, StartCommand, load_workflows
from waystation.engine.errors import RunNotFound
from waystation.storage import SqliteStore
from waystation.transport import RunningServer, create_server

WORKFLOWS = FLOW_WORKFLOWS
RUN = enums_pb2.RunStatus
EV = enums_pb2.RunEventType
STARTED = EV.RUN_EVENT_TYPE_RUN_STARTED
STEP_STARTED = EV.RUN_EVENT_TYPE_STEP_STARTED
SUCCEEDED = EV.RUN_EVENT_TYPE_STEP_SUCCEEDED
SUSPENDED = EV.RUN_EVENT_TYPE_STEP_SUSPENDED
RESUMED = EV.RUN_EVENT_TYPE_STEP_RESUMED
SETTLED = EV.RUN_EVENT_TYPE_RUN_SETTLED


# -- helpers ------------------------------------------------------------------------------


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def start(
    stub: WorkflowServiceStub, workflow_id: str, data: Any, run_id: str = ""
) -> message_pb2.WorkflowResult:
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id=workflow_id,
            run_id=run_id or new_run_id(workflow_id),
            input_data=value(data),
        )
    )


async def collect(
    stub: WorkflowServiceStub, run_id: str, after: int = 0
) -> list[message_pb2.RunEvent]:
    """Every event of a watch, until the server ends the stream."""
    call = stub.WatchRun(rr.WatchRunRequest(run_id=run_id, after_sequence=after))
    return [event async for event in call]


def shape(events: list[message_pb2.RunEvent]) -> list[tuple[int, list[str]]]:
    """Event types with their step paths, for comparing with an expected story."""
    return [(e.type, list(e.step.segments)) for e in events]


def key(event: message_pb2.RunEvent) -> tuple[int, int, tuple[str, ...]]:
    return (event.sequence, event.type, tuple(event.step.segments))


def assert_numbered_from_one(events: list[message_pb2.RunEvent]) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


COUNTED_STORY = [
    (STARTED, []),
    (STEP_STARTED, ["one"]),
    (SUCCEEDED, ["one"]),
    (STEP_STARTED, ["gate"]),
    (SUSPENDED, ["gate"]),
    (SETTLED, []),
    (RESUMED, ["gate"]),
    (SUCCEEDED, ["gate"]),
    (STEP_STARTED, ["two"]),
    (SUCCEEDED, ["two"]),
    (SETTLED, []),
]
"""The events of a `counted` run that suspends at `gate` and is then resumed."""


# -- replay -------------------------------------------------------------------------------


async def test_watch_of_a_finished_run_replays_its_history_and_ends(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A watch opened after the run finished gets every event, numbered 1, 2, 3, ..., from
    RUN_STARTED to RUN_SETTLED, and then the stream ends."""
    done = await start(stub, "arithmetic", {"log": str(tmp_path / "a.log"), "x": 1})
    events = await collect(stub, done.run_id)
    assert_numbered_from_one(events)
    assert shape(events) == [
        (STARTED, []),
        (STEP_STARTED, ["double"]),
        (SUCCEEDED, ["double"]),
        (STEP_STARTED, ["shift"]),
        (SUCCEEDED, ["shift"]),
        (STEP_STARTED, ["plus"]),
        (SUCCEEDED, ["plus"]),
        (SETTLED, []),
    ]
    assert all(e.run_id == done.run_id for e in events)
    settled = events[-1]
    assert settled.run_status == RUN.RUN_STATUS_SUCCESS
    assert settled.result.status == RUN.RUN_STATUS_SUCCESS
    assert to_json(settled.result.result) == to_json(done.result)
    assert to_json(events[2].step_result.output) == to_json(done.steps["double"].output)


# -- live ---------------------------------------------------------------------------------


async def test_live_watch_follows_a_run_through_suspend_and_resume(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A watch opened before the run starts sees it start, suspend (with the payload), settle
    SUSPENDED, get resumed and finish, and ends after the final RUN_SETTLED only."""
    run_id = new_run_id("counted")
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id=run_id))
    seen: list[message_pb2.RunEvent] = []

    async def watch() -> None:
        call = stub.WatchRun(rr.WatchRunRequest(run_id=run_id))
        async for event in call:
            seen.append(event)

    watcher = asyncio.create_task(watch())
    started = await start(stub, "counted", {"log": str(tmp_path / "c.log")}, run_id=run_id)
    assert started.status == RUN.RUN_STATUS_SUSPENDED

    async def saw_suspension() -> bool:
        return [e.type for e in seen][-1:] == [SETTLED]

    await assert_eventually(saw_suspension)
    assert not watcher.done()  # a SUSPENDED run is not final: the stream stays open
    suspended = next(e for e in seen if e.type == SUSPENDED)
    assert to_json(suspended.step_result.suspend_payload) == {"waiting_for": "value"}
    assert seen[-1].run_status == RUN.RUN_STATUS_SUSPENDED
    assert [list(p.segments) for p in seen[-1].result.suspended] == [["gate"]]

    await stub.ResumeRun(rr.ResumeRequest(run_id=run_id, resume_data=value({"value": 1})))
    await asyncio.wait_for(watcher, timeout=10)
    assert_numbered_from_one(seen)
    assert shape(seen) == COUNTED_STORY
    assert to_json(seen[6].step_result.resume_payload) == {"value": 1}
    assert seen[-1].run_status == RUN.RUN_STATUS_SUCCESS
    assert to_json(seen[-1].result.result) == {"value": 2}


async def test_live_watch_of_a_sleeping_run_stays_open_until_it_wakes_and_settles(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A WAITING run is not final: its watch shows the sleep starting and the run settling
    WAITING (RUN_SETTLED, as enums.proto promises for a waiting run, with the nap's wake-up
    time in its result), and ends only after the run wakes and settles SUCCESS."""
    started = await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="sleepy-1",
            run_id=new_run_id("sleepy"),
            input_data=value({"log": str(tmp_path / "s.log")}),
            return_immediately=True,
        )
    )
    events = await asyncio.wait_for(collect(stub, started.run_id), timeout=10)
    assert_numbered_from_one(events)
    assert shape(events) == [
        (STARTED, []),
        (STEP_STARTED, ["nap"]),
        (SETTLED, []),
        (SUCCEEDED, ["nap"]),
        (STEP_STARTED, ["woke"]),
        (SUCCEEDED, ["woke"]),
        (SETTLED, []),
    ]
    assert events[1].run_status == RUN.RUN_STATUS_WAITING
    assert events[2].run_status == RUN.RUN_STATUS_WAITING
    assert events[2].result.status == RUN.RUN_STATUS_WAITING
    assert events[1].step_result.HasField("wake_time")
    assert events[2].result.steps["nap"].wake_time == events[1].step_result.wake_time
    assert events[-1].run_status == RUN.RUN_STATUS_SUCCESS


# -- reconnect ----------------------------------------------------------------------------


async def test_reconnecting_after_a_sequence_yields_exactly_the_later_events(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`after_sequence=k` gives the events with sequence > k, the same as in the full
    history; after the last one, the stream is empty and ends."""
    started = await start(stub, "counted", {"log": str(tmp_path / "c.log")})
    await stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, resume_data=value({"value": 1})))
    full = await collect(stub, started.run_id)
    assert shape(full) == COUNTED_STORY
    for k in (0, 1, 5, 6, len(full) - 1, len(full), len(full) + 10):
        later = await collect(stub, started.run_id, after=k)
        assert [key(e) for e in later] == [key(e) for e in full if e.sequence > k]


async def test_a_watch_interrupted_mid_run_and_reopened_sees_every_event_once(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A live watch dropped at the suspension and reopened with the last sequence it saw,
    while the run goes on, misses nothing and repeats nothing."""
    run_id = new_run_id("counted")
    await stub.CreateRun(rr.CreateRunRequest(workflow_id="counted", run_id=run_id))
    first: list[message_pb2.RunEvent] = []
    call = stub.WatchRun(rr.WatchRunRequest(run_id=run_id))
    await start(stub, "counted", {"log": str(tmp_path / "c.log")}, run_id=run_id)
    async for event in call:
        first.append(event)
        if event.type == SUSPENDED:
            break
    call.cancel()

    resumed = stub.ResumeRun(rr.ResumeRequest(run_id=run_id, resume_data=value({"value": 1})))
    rest = await collect(stub, run_id, after=first[-1].sequence)
    assert (await resumed).status == RUN.RUN_STATUS_SUCCESS
    together = first + rest
    assert_numbered_from_one(together)
    assert shape(together) == COUNTED_STORY
    assert [key(e) for e in together] == [key(e) for e in await collect(stub, run_id)]


# -- foreach items ------------------------------------------------------------------------


async def test_item_events_of_a_foreach_carry_their_index(stub: WorkflowServiceStub) -> None:
    """The step events of foreach items name the foreach step and the item's index."""
    items = [{"name": "x", "ask": True}, {"name": "y"}]
    started = await start(stub, "items-3", items)
    await stub.ResumeRun(
        rr.ResumeRequest(run_id=started.run_id, resume_data=value({"ok": True}), foreach_index=0)
    )
    events = await collect(stub, started.run_id)
    per_item = [(e.type, e.foreach_index) for e in events if e.HasField("foreach_index")]
    assert all(list(e.step.segments) == ["item"] for e in events if e.HasField("foreach_index"))
    assert sorted(per_item) == sorted(
        [
            (STEP_STARTED, 0),
            (SUSPENDED, 0),
            (STEP_STARTED, 1),
            (SUCCEEDED, 1),
            (RESUMED, 0),
            (SUCCEEDED, 0),
        ]
    )
    assert per_item.index((SUSPENDED, 0)) < per_item.index((RESUMED, 0))


# -- refusals -----------------------------------------------------------------------------


async def test_watch_of_an_unknown_run_is_not_found(stub: WorkflowServiceStub) -> None:
    """WatchRun of a run that does not exist fails NOT_FOUND RUN_NOT_FOUND."""
    error = await call_error(collect(stub, "no-such-run"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RUN_NOT_FOUND"


async def test_watch_with_a_negative_after_sequence_is_invalid(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A negative `after_sequence` is INVALID_ARGUMENT, with a field violation naming it."""
    done = await start(stub, "arithmetic", {"log": str(tmp_path / "a.log"), "x": 1})
    error = await call_error(collect(stub, done.run_id, after=-1))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert "after_sequence" in error.violations


async def test_a_watch_of_a_run_deleted_meanwhile_ends_not_found(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Not OK after the last event, which a client would read as the run having settled."""
    started = await start(stub, "counted", {"log": str(tmp_path / "c.log")})
    assert started.status == RUN.RUN_STATUS_SUSPENDED
    call = stub.WatchRun(rr.WatchRunRequest(run_id=started.run_id))
    seen = []
    async for event in call:
        seen.append(event)
        if event.type == SETTLED:
            await stub.DeleteRun(rr.DeleteRunRequest(run_id=started.run_id))
            break
    error = await call_error(_rest(call))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "RUN_NOT_FOUND"
    assert shape(seen) == COUNTED_STORY[:6]


async def test_a_watch_never_streams_the_new_run_that_took_a_deleted_runs_id(
    tmp_path: Path,
) -> None:
    """A watcher between two reads of a run that is deleted, and whose id a new run (of
    another tenant, say) then takes, ends NOT_FOUND. It followed the id alone: once the new
    run had more events than the old one, it streamed them. (The engine's own watch, so
    that the watcher is held exactly there.)"""
    store = SqliteStore(str(tmp_path / "reused.db"))
    await store.setup()
    engine = Engine(store, load_workflows(FLOW_WORKFLOWS))
    await engine.start()
    try:
        old = StartCommand(workflow_id="two-stages", run_id="reused", resource_id="mine/")
        await engine.start_run(old)
        watch = engine.watch("reused", 0)
        told = [await anext(watch) for _ in await store.list_events("reused", 0, 100)]
        await engine.delete_run("reused")
        new = StartCommand(workflow_id="two-stages", run_id="reused", resource_id="theirs/")
        await engine.start_run(new)
        for _ in range(2):
            approval = ResumeCommand("reused", resume_data={"ok": True})
            await engine.resume_run(approval)
        assert len(await store.list_events("reused", 0, 100)) > len(told)
        with pytest.raises(RunNotFound):
            await anext(watch)
    finally:
        await engine.close()
        await store.close()


async def test_a_watcher_that_stops_reading_holds_about_a_megabyte_of_events(
    tmp_path: Path,
) -> None:
    """A watch read the stored events in pages of 500 and held a page while its client did
    not read: five such watchers of a run with 128 KB events held 570 MB. Then its first
    page was 64 events, whatever their size (an event may be 4 MiB: 256 MiB held by one
    stalled watcher). Every page now stops at the event that brings it to a megabyte of
    stored JSON (the engine's own watch, held where a stalled stream holds it). Once the
    watch ends, the engine keeps nothing of it."""
    store = SqliteStore(str(tmp_path / "chatty.db"))
    await store.setup()
    engine = Engine(store, load_workflows(FLOW_WORKFLOWS))
    await engine.start()
    try:
        pad = "x" * 100_000
        data = {"i": 0, "n": 60, "pad": pad}
        done = await engine.start_run(StartCommand(workflow_id="chatty", input_data=data))
        watch = engine.watch(done.run_id, 0)
        first = await anext(watch)
        assert first["sequence"] == 1
        pages = [watch.ag_frame.f_locals["events"]]  # type: ignore[attr-defined]
        seen = 1
        async for _ in watch:
            seen += 1
            page = watch.ag_frame.f_locals["events"]  # type: ignore[attr-defined]
            if page is not pages[-1]:
                pages.append(page)
        assert len(pages) >= 5, [len(page) for page in pages]
        for page in pages:
            last = len(json.dumps(page[-1]))
            assert page.size - last < 1 << 20, (len(page), page.size)
            assert 1 <= len(page) <= 15, len(page)
        assert seen == len(await store.list_events(done.run_id, 0, 1000))
        assert (engine._changes, engine._watchers) == ({}, {})
    finally:
        await engine.close()
        await store.close()


async def test_a_watch_outlives_client_keepalive_pings_every_five_seconds(
    server: RunningServer, tmp_path: Path
) -> None:
    """A client (or a mesh's proxy) that pings every 5 s, also with no call in flight, keeps
    its connection: a watch of a suspended run, which sends nothing for days, stays open.
    With gRPC's defaults (a ping at most every 5 minutes without data), the server sent
    GOAWAY too_many_pings after three pings, and the watch ended UNAVAILABLE."""
    keepalive = [
        ("grpc.keepalive_time_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    address = f"127.0.0.1:{server.port}"
    async with grpc.aio.insecure_channel(address, options=keepalive) as channel:
        stub = WorkflowServiceStub(channel)
        started = await start(stub, "counted", {"log": str(tmp_path / "c.log")})
        call = stub.WatchRun(rr.WatchRunRequest(run_id=started.run_id))
        while (await call.read()).type != SETTLED:  # up to the suspension; then quiet
            pass
        waiting = asyncio.ensure_future(call.read())
        done, _ = await asyncio.wait({waiting}, timeout=21)  # quiet, and open, for 4 pings
        assert not done, waiting.result()
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        approval = value({"value": 1})
        await stub.ResumeRun(rr.ResumeRequest(run_id=started.run_id, resume_data=approval))
        rest = [await asyncio.wait_for(waiting, timeout=10)]
        while (event := await call.read()) is not grpc.aio.EOF:
            rest.append(event)
        assert rest[-1].type == SETTLED
        assert rest[-1].result.status == RUN.RUN_STATUS_SUCCESS


async def test_a_drain_ends_watches_at_once_naming_where_to_go_on(
    db_path: Path, tmp_path: Path
) -> None:
    """A watch of a suspended run waits for days: a drain ends it at once, UNAVAILABLE
    SERVER_DRAINING with the sequence to watch again after (on another replica), so that
    the drain does not last the whole grace for nothing (a dashboard's watch held every
    rollout for it) and the watcher misses nothing."""
    running = await create_server(settings_for(db_path))
    address = f"127.0.0.1:{running.port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = WorkflowServiceStub(channel)
            started = await start(stub, "counted", {"log": str(tmp_path / "c.log")})
            call = stub.WatchRun(rr.WatchRunRequest(run_id=started.run_id))
            while (event := await call.read()).type != SETTLED:
                pass
            last = event.sequence
            began = time.monotonic()
            stopping = asyncio.ensure_future(running.stop(grace=10))
            error = await call_error(_read_to_end(call))
            assert time.monotonic() - began < 2
            assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_DRAINING")
            assert error.metadata["after_sequence"] == str(last)
            await asyncio.wait_for(stopping, timeout=5)
            assert time.monotonic() - began < 5
    finally:
        await running.stop(grace=0)


async def _read_to_end(call: Any) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def _rest(call: Any) -> list[message_pb2.RunEvent]:
    return [event async for event in call]
