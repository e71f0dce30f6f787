"""The `waystation` CLI as people use it: a real subprocess against a real server process.

Exit codes are the gRPC status codes (0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, 9
FAILED_PRECONDITION, 10 ABORTED, 14 UNAVAILABLE); usage errors exit with 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server_process import ServerProcess, free_port

ORDER = '{"order_id": "o-1", "amount": 12.5}'
APPROVE = '{"approved": true, "approver": "ann"}'
DOCUMENT = '{"document_id": "d-1", "title": "Quarterly report"}'

# Wide and colourless, so that tables do not fold the ids the tests look for.
CLI_ENV = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "WAYSTATION_SERVER")}
CLI_ENV |= {"COLUMNS": "240", "NO_COLOR": "1"}


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def cli(address: str, *args: str) -> Outcome:
    command = [sys.executable, "-m", "waystation.cli", "--server", address, "--timeout", "20"]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, env=CLI_ENV, timeout=45, check=False
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("cli") / "x.db") as process:
        yield process


@pytest.fixture
def run_id() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}"


def start_order(server: ServerProcess, run_id: str) -> Outcome:
    outcome = cli(
        server.address, "runs", "start", "order-approval", "--data", ORDER, "--run-id", run_id
    )
    assert outcome.code == 0, outcome.stderr
    return outcome


def test_workflows_list_shows_both_examples(server: ServerProcess) -> None:
    outcome = cli(server.address, "workflows", "list")
    assert outcome.code == 0, outcome.stderr
    assert "order-approval" in outcome.stdout
    assert "document-review" in outcome.stdout


def test_workflows_show_marks_the_nested_steps_that_can_suspend(server: ServerProcess) -> None:
    outcome = cli(server.address, "workflows", "show", "document-review")
    assert outcome.code == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert any("legal-review" in line and "can suspend" in line for line in lines)
    assert not any("publish" in line and "can suspend" in line for line in lines)
    assert "step review.legal-review" in outcome.stdout
    assert '"reviewer"' in outcome.stdout  # the resume schema


def test_start_suspends_the_order_at_the_approval_step(server: ServerProcess, run_id: str) -> None:
    outcome = start_order(server, run_id)
    assert "suspended" in outcome.stdout
    assert "approval" in outcome.stdout
    assert "routine check" in outcome.stdout  # the suspend payload
    assert run_id in outcome.stdout


def test_resume_with_valid_data_finishes_the_run(server: ServerProcess, run_id: str) -> None:
    start_order(server, run_id)
    outcome = cli(server.address, "runs", "resume", run_id, "--data", APPROVE)
    assert outcome.code == 0, outcome.stderr
    assert "success" in outcome.stdout
    assert "fulfilled" in outcome.stdout


def test_resume_with_invalid_data_exits_3_and_prints_the_field_violation(
    server: ServerProcess, run_id: str
) -> None:
    start_order(server, run_id)
    outcome = cli(server.address, "runs", "resume", run_id, "--data", '{"approved": true}')
    assert outcome.code == 3
    assert "INVALID_ARGUMENT" in outcome.stderr
    assert "INVALID_RESUME_DATA" in outcome.stderr
    assert "resume_data.approver:" in outcome.stderr
    shown = cli(server.address, "runs", "show", run_id)
    assert "suspended" in shown.stdout


def test_show_of_an_unknown_run_exits_5(server: ServerProcess) -> None:
    outcome = cli(server.address, "runs", "show", f"unknown-{uuid.uuid4().hex}")
    assert outcome.code == 5
    assert "NOT_FOUND" in outcome.stderr
    assert "RUN_NOT_FOUND" in outcome.stderr


def test_json_output_parses_as_json(server: ServerProcess, run_id: str) -> None:
    outcome = cli(
        server.address,
        "--json",
        "runs",
        "start",
        "order-approval",
        "--data",
        ORDER,
        "--run-id",
        run_id,
    )
    assert outcome.code == 0, outcome.stderr
    result = json.loads(outcome.stdout)
    assert result["status"] == "RUN_STATUS_SUSPENDED"
    assert result["suspended"] == [{"segments": ["approval"]}]
    listed = json.loads(cli(server.address, "--json", "workflows", "list").stdout)
    assert {"order-approval", "document-review"} <= {w["workflowId"] for w in listed["workflows"]}


def test_a_nested_step_resumes_by_its_dotted_path_and_by_label(
    server: ServerProcess, run_id: str
) -> None:
    started = cli(
        server.address, "runs", "start", "document-review", "--data", DOCUMENT, "--run-id", run_id
    )
    assert started.code == 0, started.stderr
    assert "review.legal-review" in started.stdout
    legal = '{"approved": true, "reviewer": "lee"}'
    outcome = cli(
        server.address, "runs", "resume", run_id, "--step", "review.legal-review", "--data", legal
    )
    assert outcome.code == 0, outcome.stderr
    assert "review.editor-signoff" in outcome.stdout
    editor = '{"signed_off": true, "editor": "eve"}'
    outcome = cli(server.address, "runs", "resume", run_id, "--label", "editor", "--data", editor)
    assert outcome.code == 0, outcome.stderr
    assert "success" in outcome.stdout


def test_resume_of_a_step_that_is_not_suspended_exits_9_and_lists_the_suspended(
    server: ServerProcess, run_id: str
) -> None:
    cli(server.address, "runs", "start", "document-review", "--data", DOCUMENT, "--run-id", run_id)
    outcome = cli(
        server.address,
        "runs",
        "resume",
        run_id,
        "--step",
        "review.editor-signoff",
        "--data",
        '{"signed_off": true, "editor": "eve"}',
    )
    assert outcome.code == 9
    assert "STEP_NOT_SUSPENDED" in outcome.stderr
    assert "suspended: review.legal-review" in outcome.stderr


def test_a_stale_expected_version_exits_10(server: ServerProcess, run_id: str) -> None:
    start_order(server, run_id)
    version = json.loads(cli(server.address, "--json", "runs", "show", run_id).stdout)
    stale = str(int(version["result"]["version"]) - 1)
    outcome = cli(
        server.address, "runs", "resume", run_id, "--data", APPROVE, "--expected-version", stale
    )
    assert outcome.code == 10
    assert "ABORTED" in outcome.stderr


def test_validate_only_checks_the_data_and_changes_nothing(
    server: ServerProcess, run_id: str
) -> None:
    start_order(server, run_id)
    outcome = cli(server.address, "runs", "resume", run_id, "--data", APPROVE, "--validate-only")
    assert outcome.code == 0, outcome.stderr
    assert "suspended" in outcome.stdout
    shown = cli(server.address, "--json", "runs", "show", run_id)
    assert json.loads(shown.stdout)["status"] == "RUN_STATUS_SUSPENDED"


def test_runs_list_filters_by_resource_and_status(server: ServerProcess, run_id: str) -> None:
    resource = f"tenant-{run_id}"
    cli(
        server.address,
        "runs",
        "start",
        "order-approval",
        "--data",
        ORDER,
        "--run-id",
        run_id,
        "--resource",
        resource,
    )
    suspended = cli(server.address, "runs", "list", "--resource", resource, "--status", "SUSPENDED")
    assert suspended.code == 0, suspended.stderr
    assert run_id in suspended.stdout
    succeeded = cli(server.address, "runs", "list", "--resource", resource, "--status", "success")
    assert run_id not in succeeded.stdout


def test_cancel_cancels_a_suspended_run(server: ServerProcess, run_id: str) -> None:
    start_order(server, run_id)
    outcome = cli(server.address, "runs", "cancel", run_id, "--reason", "not needed")
    assert outcome.code == 0, outcome.stderr
    assert "canceled" in outcome.stdout


def test_data_is_read_from_a_file_named_after_an_at_sign(
    server: ServerProcess, run_id: str, tmp_path: Path
) -> None:
    data = tmp_path / "order.json"
    data.write_text(ORDER, encoding="utf-8")
    outcome = cli(
        server.address, "runs", "start", "order-approval", "--data", f"@{data}", "--run-id", run_id
    )
    assert outcome.code == 0, outcome.stderr
    assert "suspended" in outcome.stdout


def test_invalid_data_json_is_a_usage_error_before_any_call() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    outcome = cli(nobody, "runs", "start", "order-approval", "--data", "{not json")
    assert outcome.code == 2
    assert "--data" in outcome.stderr
    assert "not valid JSON" in outcome.stderr


def test_an_unknown_status_is_a_usage_error() -> None:
    outcome = cli(f"127.0.0.1:{free_port()}", "runs", "list", "--status", "sleepy")
    assert outcome.code == 2
    assert "suspended" in outcome.stderr  # the choices are listed


def test_an_unreachable_server_exits_14() -> None:
    outcome = cli(f"127.0.0.1:{free_port()}", "workflows", "list")
    assert outcome.code == 14
    assert "UNAVAILABLE" in outcome.stderr


def test_serve_reads_its_workflows_from_the_environment_and_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    env = {"WAYSTATION_WORKFLOWS": "waystation.examples.order_approval"}
    with ServerProcess(tmp_path / "env.db", env=env) as process:
        outcome = cli(process.address, "workflows", "list")
        assert outcome.code == 0, outcome.stderr
        assert "order-approval" in outcome.stdout
        assert "document-review" not in outcome.stdout
        assert process.stop(signal.SIGTERM) == 0
