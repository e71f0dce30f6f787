"""End-to-end against a server of the tests' own (`own_server.py`): it serves the
control-flow workflows of `tests.support.flows` and has a 16 MiB message limit, over gRPC's
default 4 MiB.

`two-approvals` suspends two parallel steps, `a` (resume label `label-a`) and `b`
(`label-b`); `inflate` returns a string of `bytes` characters.
"""

from __future__ import annotations

import uuid

import pytest

from waystation_client import (
    AsyncWorkflowClient,
    ResponseTooLargeError,
    RunStatus,
    StepAmbiguousError,
    WorkflowClient,
    from_value,
)

# About 6 MB: its StartRun answer, which carries it twice (step output and result), is
# more than gRPC's default 4 MiB and less than the server's 16 MiB.
LARGE = 6_000_000


def test_an_ambiguous_resume_lists_the_suspended_steps_and_their_resume_labels(
    own_client: WorkflowClient,
) -> None:
    started = own_client.start_run("two-approvals")

    with pytest.raises(StepAmbiguousError) as caught:
        own_client.resume_run(started.run_id, resume_data={"ok": True})

    error = caught.value
    assert sorted(error.suspended) == [["a"], ["b"]]
    labels = {label: list(where.step.segments) for label, where in error.resume_labels.items()}
    assert labels == {"label-a": ["a"], "label-b": ["b"]}
    assert not error.resume_labels["label-a"].HasField("foreach_index")


def test_a_client_takes_an_answer_over_grpcs_default_limit_when_the_servers_is_raised(
    own_client: WorkflowClient,
) -> None:
    done = own_client.start_run("inflate", input_data={"bytes": LARGE})
    assert done.status == RunStatus.RUN_STATUS_SUCCESS
    assert len(from_value(done.result)["blob"]) == LARGE
    settled = list(own_client.watch_run(done.run_id))[-1]
    assert len(from_value(settled.result.result)["blob"]) == LARGE


async def test_an_answer_over_the_clients_own_limit_says_so_and_the_call_took_effect(
    own_address: str,
) -> None:
    limit, run_id = 1024 * 1024, f"inflate-{uuid.uuid4()}"
    async with AsyncWorkflowClient(own_address, max_receive_message_bytes=limit) as client:
        with pytest.raises(ResponseTooLargeError) as caught:
            await client.start_run("inflate", run_id=run_id, input_data={"bytes": 2 * limit})
        error = caught.value
        assert (error.limit_of, error.limit) == ("client", limit)
        assert error.size is not None and error.size > 2 * limit
        assert "receive limit" in str(error) and "took effect" in str(error)

        # It took effect: the run is there, finished (a listing carries no result).
        runs = (await client.list_runs(workflow_id="inflate")).runs
        assert [r.status for r in runs if r.run_id == run_id] == [RunStatus.RUN_STATUS_SUCCESS]
        with pytest.raises(ResponseTooLargeError):
            [event async for event in client.watch_run(run_id)]
