"""End-to-end against a server of the tests' own (`own_server.py`): it serves the
control-flow workflows of `tests.support.flows` and has a 16 MiB message limit.

`two-approvals` suspends two parallel steps, `a` (resume label `label-a`) and `b`
(`label-b`); `inflate` returns a string of `bytes` characters.
"""

from __future__ import annotations

import pytest

from waystation_client import StepAmbiguousError, WorkflowClient


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
