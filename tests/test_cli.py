"""The `waystation` CLI as people use it: a real subprocess against a real server process.

Exit codes are the gRPC status codes (0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, 9
FAILED_PRECONDITION, 10 ABORTED, 14 UNAVAILABLE); usage errors exit with 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.support.certificates import Authority
from tests.support.server_process import ServerProcess, free_port
from tests.support.workflows import lines
from waystation.connection import Credentials

ROOT = Path(__file__).resolve().parent.parent
ORDER = '{"order_id": "o-1", "amount": 12.5}'
APPROVE = '{"approved": true, "approver": "ann"}'
DOCUMENT = '{"document_id": "d-1", "title": "Quarterly report"}'

# Wide and colourless, so that tables do not fold the ids the tests look for.
CLI_ENV = {
    k: v for k, v in os.environ.items() if k != "FORCE_COLOR" and not k.startswith("WAYSTATION_")
}
CLI_ENV |= {"COLUMNS": "240", "NO_COLOR": "1"}


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def cli(
    address: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> Outcome:
    command = [sys.executable, "-m", "waystation.cli", "--server", address, "--timeout", "20"]
    done = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=CLI_ENV | (env or {}),
        input=stdin,
        timeout=45,
        check=False,
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


def test_start_resume_and_show_print_the_resume_labels(server: ServerProcess, run_id: str) -> None:
    """Every command that prints a run's result names the labels `runs resume --label`
    takes, and the step each one resumes."""
    order = '{"order_id": "o-1", "amount": 250}'
    started = cli(
        server.address, "runs", "start", "order-approval", "--data", order, "--run-id", run_id
    )
    assert started.code == 0, started.stderr
    assert "label manager -> approval" in started.stdout
    shown = cli(server.address, "runs", "show", run_id)
    assert "label manager -> approval" in shown.stdout
    document = f"doc-{run_id}"
    args = ["runs", "start", "document-review", "--data", DOCUMENT, "--run-id", document]
    assert cli(server.address, *args).code == 0
    legal = '{"approved": true, "reviewer": "lee"}'
    resumed = cli(server.address, "runs", "resume", document, "--label", "legal", "--data", legal)
    assert resumed.code == 0, resumed.stderr
    assert "label editor -> review.editor-signoff" in resumed.stdout
    assert "label legal" not in resumed.stdout


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
    elsewhere = f"{run_id}-elsewhere"
    args = ["runs", "start", "order-approval", "--data", ORDER, "--run-id", elsewhere]
    assert cli(server.address, *args, "--resource", f"{resource}-2").code == 0
    for status in ("SUSPENDED", "suspended"):  # --help lists them in lower case
        listed = cli(server.address, "runs", "list", "--resource", resource, "--status", status)
        assert listed.code == 0, listed.stderr
        assert run_id in listed.stdout
        assert elsewhere not in listed.stdout
    succeeded = cli(server.address, "runs", "list", "--resource", resource, "--status", "success")
    assert succeeded.code == 0, succeeded.stderr
    assert run_id not in succeeded.stdout


def test_runs_list_keeps_each_run_id_on_one_line_in_80_columns(server: ServerProcess) -> None:
    """A run id the server made up (36 characters) was folded over three lines of the
    table in an 80-column terminal, so it could not be copied from `runs list`."""
    started = cli(server.address, "--json", "runs", "start", "order-approval", "--data", ORDER)
    made_up = json.loads(started.stdout)["runId"]
    listed = cli(server.address, "runs", "list", env={**CLI_ENV, "COLUMNS": "80"})
    assert listed.code == 0, listed.stderr
    assert any(made_up in line for line in listed.stdout.splitlines()), listed.stdout


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


def test_data_is_read_from_standard_input_after_at_dash(server: ServerProcess, run_id: str) -> None:
    args = ["runs", "start", "order-approval", "--data", "@-", "--run-id", run_id]
    outcome = cli(server.address, *args, stdin=ORDER)
    assert outcome.code == 0, outcome.stderr
    assert "suspended" in outcome.stdout


def test_a_step_path_with_an_empty_segment_is_a_usage_error_before_any_call() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    outcome = cli(nobody, "runs", "resume", "r-1", "--step", "left..x", "--data", "{}")
    assert outcome.code == 2, outcome.stderr
    assert "--step" in outcome.stderr


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


def test_help_prints_flags_as_flags_and_help_texts_as_written() -> None:
    """`--help` shows no value placeholder after a flag (`--json <bool>`), keeps brackets
    (`[i]` is no console markup) and says that the global options go before the group."""
    nobody = f"127.0.0.1:{free_port()}"
    watch = cli(nobody, "runs", "watch", "--help")
    assert watch.code == 0, watch.stderr
    text = " ".join(watch.stdout.split())
    assert "step (`[i]` for a foreach item)" in text
    assert "`waystation --json runs watch RUN_ID`" in text
    assert "go before `runs`" in text
    flags = {(): "--json", ("runs", "start"): "--no-wait", ("runs", "resume"): "--validate-only"}
    for command, flag in flags.items():
        shown = cli(nobody, *command, "--help")
        assert shown.code == 0, shown.stderr
        assert "<bool>" not in shown.stdout
        for name in (flag, "--help"):
            assert re.search(rf"^ +{name} +[A-Z]", shown.stdout, re.MULTILINE), shown.stdout


def test_payloads_print_with_their_keys_sorted(server: ServerProcess, run_id: str) -> None:
    """A Struct is a map, so the server's key order changes from one answer to the next;
    the CLI prints keys sorted, the same every time (and as the README shows them)."""
    order = '{"order_id": "o-1", "amount": 250}'
    shown = set()
    for i in range(3):
        args = ["runs", "start", "order-approval", "--data", order, "--run-id", f"{run_id}-{i}"]
        started = cli(server.address, *args)
        assert started.code == 0, started.stderr
        shown |= {line.strip() for line in started.stdout.splitlines() if "reason" in line}
    assert shown == {
        'approval  {"amount": 250, "order_id": "o-1", "reason": "amount needs a manager"}'
    }


def test_help_names_what_each_option_takes() -> None:
    """An option that takes a value names it (`--db URL`, `--status STATUS`), not the
    Python type typer would print (`<str>`, `<list[str]>`, `<float range>`); a choice
    lists the choices."""
    nobody = f"127.0.0.1:{free_port()}"
    commands = [(), ("serve",), ("runs", "list"), ("runs", "start"), ("runs", "resume")]
    for command in commands:
        shown = cli(nobody, *command, "--help")
        assert shown.code == 0, shown.stderr
        for name, takes in re.findall(r"^ +(--[\w-]+) <([^>]*)>", shown.stdout, re.MULTILINE):
            assert "|" in takes, f"{' '.join(command)} {name} <{takes}>"
    serve = cli(nobody, "serve", "--help").stdout
    for row in ("--listen HOST:PORT", "--db URL", "--workflows MODULE", "--grace SECONDS"):
        assert re.search(rf"^ +{row} ", serve, re.MULTILINE), serve


def test_the_global_options_may_also_follow_the_command(server: ServerProcess, run_id: str) -> None:
    """`runs start ... --json --server ADDR` is `--server ADDR --json runs start ...`; a
    command's own option keeps its value even when the value reads like a global option."""

    def raw(*args: str) -> Outcome:
        command = [sys.executable, "-m", "waystation.cli", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, env=CLI_ENV, timeout=45, check=False
        )
        return Outcome(done.returncode, done.stdout, done.stderr)

    started = raw(
        "runs", "start", "order-approval", "--data", ORDER, "--run-id", run_id,
        "--json", "--server", server.address, "--timeout=20",
    )  # fmt: skip
    assert started.code == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "RUN_STATUS_SUSPENDED"
    resume = ["runs", "resume", run_id, "--request-id", "--json", "--data", APPROVE]
    first = raw(*resume, "--json", f"--server={server.address}")
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "RUN_STATUS_SUCCESS"
    again = raw(*resume, "--server", server.address)  # the same request id: a replay
    assert again.code == 0, again.stderr
    assert "success" in again.stdout


def test_an_unreachable_server_exits_14() -> None:
    outcome = cli(f"127.0.0.1:{free_port()}", "workflows", "list")
    assert outcome.code == 14
    assert "UNAVAILABLE" in outcome.stderr


def test_a_call_that_runs_out_of_time_exits_4_without_a_hint_unless_it_starts_a_run() -> None:
    """Only a start or resume may go on after its deadline; a read that runs out of time
    says nothing about runs."""
    only_the_error = ["Error: DEADLINE_EXCEEDED (4): Deadline Exceeded"]
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        for command in (["runs", "list"], ["workflows", "list"], ["runs", "show", "r-1"]):
            outcome = cli(address, "--timeout", "0.3", *command)
            assert outcome.code == 4, outcome.stderr
            assert outcome.stderr.splitlines() == only_the_error
        resumed = cli(address, "--timeout", "0.3", "runs", "resume", "r-2", "--request-id", "q-2")
        assert resumed.code == 4
        assert "`waystation runs show r-2`, or retry with the same --request-id q-2" in (
            resumed.stderr
        )


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


@pytest.mark.parametrize(
    ("args", "env", "option"),
    [
        (["--auth-config", ""], {}, "--auth-config"),
        ([], {"WAYSTATION_AUTH_CONFIG": ""}, "--auth-config"),
        (["--tls-cert", "", "--tls-key", ""], {}, "--tls-cert"),
    ],
    ids=["auth-config-option", "auth-config-variable", "tls-cert"],
)
def test_serve_refuses_a_file_option_given_empty(
    tmp_path: Path, args: list[str], env: dict[str, str], option: str
) -> None:
    """An empty path is how an unset variable in a manifest looks: the server served with
    no authentication (or in plain text), silently. Leaving the option out still does."""
    process = ServerProcess(tmp_path / "empty.db", extra_args=args)
    done = subprocess.run(
        process.command, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.split())
    assert option in said and "is empty" in said, said


def test_serve_drains_on_sighup_as_on_sigterm(tmp_path: Path) -> None:
    """A hangup (the terminal closed, or a reload an init system asks for: the settings are
    read at start-up only) drains and exits 0; it killed the server at once (exit 129)."""
    with ServerProcess(tmp_path / "hup.db") as process:
        assert process.stop(signal.SIGHUP) == 0
    assert "draining" in process.log


@pytest.mark.parametrize(
    ("workflows", "error"),
    [
        ("tests.support.broken_flows", "two workflows have the id 'twice'"),
        ("tests.support.no_such_module", "no module named 'tests.support.no_such_module'"),
        (
            "tests.support.raising_flows",
            "importing tests.support.raising_flows: "
            f"{ROOT / 'tests' / 'support' / 'raising_flows.py'}:7: TypeError: workflow"
            " 'broken': .parallel takes a non-empty list of steps",
        ),
        (
            "tests.support.bad_retry_flows",
            "importing tests.support.bad_retry_flows: "
            f"{ROOT / 'tests' / 'support' / 'bad_retry_flows.py'}:6: ValueError:"
            " retry_config.delay must be >= 0 seconds, not -1",
        ),
    ],
    ids=["duplicate-ids", "missing-module", "a-refused-definition", "a-refused-retry-config"],
)
def test_serve_exits_1_at_once_when_its_workflows_cannot_be_loaded(
    tmp_path: Path, workflows: str, error: str
) -> None:
    """A server that cannot serve says why (and, for a module that raises, where) in one
    line and exits, so a supervisor sees it fail; it does not sit idle holding the database
    open, nor print a traceback of the engine's code."""
    server = ServerProcess(tmp_path / "broken.db", workflows=[workflows])
    with pytest.raises(RuntimeError, match="exited during startup"):
        server.start()
    assert server.stop(timeout=5) == 1
    assert error in " ".join(server.log.split())  # the message may be folded
    assert "Traceback" not in server.log


def test_serve_names_the_line_of_a_workflows_module_that_does_not_compile(
    tmp_path: Path,
) -> None:
    """A SyntaxError's traceback ends in the import machinery: the line named the standard
    library's importlib (an outside audit), where it now names the user's file and line."""
    (tmp_path / "typo_flows.py").write_text("x = 1\ndef f(:\n")
    server = ServerProcess(tmp_path / "typo.db", workflows=["typo_flows"], cwd=tmp_path)
    with pytest.raises(RuntimeError, match="exited during startup"):
        server.start()
    assert server.stop(timeout=5) == 1
    said = " ".join(server.log.split())
    assert f"importing typo_flows: {tmp_path / 'typo_flows.py'}:2: SyntaxError" in said
    assert "importlib" not in said


def test_serve_refuses_a_port_another_server_listens_on(tmp_path: Path) -> None:
    """A second server on a busy address exits 1 instead of sharing the port's calls
    (gRPC's default SO_REUSEPORT would split them between two stores), and the first
    server goes on serving."""

    def served(address: str) -> list[str]:
        outcome = cli(address, "--json", "workflows", "list")
        assert outcome.code == 0, outcome.stderr
        return [w["workflowId"] for w in json.loads(outcome.stdout)["workflows"]]

    with ServerProcess(tmp_path / "first.db") as first:
        examples = served(first.address)
        second = ServerProcess(tmp_path / "second.db", workflows=["tests.support.workflows"])
        second.address = first.address
        done = subprocess.run(second.command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert f"cannot listen on {first.address}" in " ".join(done.stderr.split())
        for _ in range(4):  # every call still reaches the first server
            assert served(first.address) == examples
        assert first.running


def test_serve_refuses_a_port_above_65535(tmp_path: Path) -> None:
    """grpc would listen on the port modulo 65536: another port than the one asked for."""
    server = ServerProcess(tmp_path / "wrap.db")
    server.address = f"127.0.0.1:{65536 + free_port()}"
    done = subprocess.run(server.command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "port" in done.stderr and "is above 65535" in " ".join(done.stderr.split())


def test_serve_refuses_a_sqlite_file_another_server_serves(tmp_path: Path) -> None:
    """A SQLite file takes one process: a second server on it (another port) exits 1 at
    once, before it could take over the runs the first one drives."""
    db = tmp_path / "shared.db"
    with ServerProcess(db) as first:
        started = start_order(first, f"shared-{uuid.uuid4().hex[:8]}")
        assert started.code == 0, started.stderr
        second = ServerProcess(db)
        done = subprocess.run(second.command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert f"another process serves {db}" in " ".join(done.stderr.split())
        assert "recovered" not in done.stderr and "continuing" not in done.stderr
        assert cli(first.address, "workflows", "list").code == 0
    with ServerProcess(db) as again:  # the first one's lock went with it
        assert cli(again.address, "workflows", "list").code == 0


def test_serve_says_in_one_line_that_another_program_locks_its_sqlite_file(
    tmp_path: Path,
) -> None:
    """Another program holding the database's write lock past the busy timeout (5 s):
    `cannot start: ... database is locked`, exit 1, not an 82-line traceback."""
    db = tmp_path / "held.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE other (x)")
        holder.execute("BEGIN EXCLUSIVE")
        blocked = ServerProcess(db)
        done = subprocess.run(blocked.command, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "cannot start: sqlite:" in said and "database is locked" in said, said
    assert "Traceback" not in done.stderr


def test_serve_without_migrations_refuses_an_old_sqlite_schema(tmp_path: Path) -> None:
    """`--no-migrate` only checks the schema, on SQLite as on PostgreSQL: a new file is
    refused with one line, and a file a migrating server made is served."""
    db = tmp_path / "checked.db"
    checking = ServerProcess(db, extra_args=["--no-migrate"])
    done = subprocess.run(checking.command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot start: schema version 0, this server needs" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    with ServerProcess(db):
        pass
    with ServerProcess(db, extra_args=["--no-migrate"]) as checked:
        assert cli(checked.address, "workflows", "list").code == 0


def test_serve_refuses_a_sqlite_schema_newer_than_it_knows(tmp_path: Path) -> None:
    """A file a newer server migrated (after a rollback): refused with one line, with or
    without migrations, rather than served with a schema this server does not know."""
    db = tmp_path / "newer.db"
    with ServerProcess(db):
        pass
    with sqlite3.connect(db) as newer:
        newer.execute("INSERT INTO schema_version (version) VALUES (999)")
    for extra in ([], ["--no-migrate"]):
        done = subprocess.run(
            ServerProcess(db, extra_args=extra).command, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, extra
        said = " ".join(done.stderr.split())
        assert "cannot start: schema version 999 is newer than this server's" in said, said


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://:memory:", "sqlite:///runs/"])
def test_serve_refuses_a_sqlite_url_that_names_no_file(url: str, tmp_path: Path) -> None:
    """It served from memory, keeping nothing, and ListRuns and WatchRun failed for every
    input (the reader's connection saw another, empty, database)."""
    done = subprocess.run(
        ServerProcess(tmp_path / "unused.db", db_url=url).command,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    said = " ".join(done.stderr.split())
    assert "names no file" in said, said
    assert "Traceback" not in done.stderr


def test_serve_follows_a_symbolic_link_to_its_sqlite_file(tmp_path: Path) -> None:
    """SQLite names the WAL after the link's target: the server looked for the link's, and
    could not start; a second server, through the link or the file, is refused."""
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    with ServerProcess(link, db_url=f"sqlite:///{link}") as served:
        assert cli(served.address, "workflows", "list").code == 0
        second = subprocess.run(
            ServerProcess(real).command, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert "another process serves" in second.stderr


def test_serve_warns_of_a_sqlite_file_with_another_hard_link(tmp_path: Path) -> None:
    """The lock beside the file cannot stop a server started through another hard link
    (it saw an empty database, and the two WALs lost runs): the start-up says so."""
    db = tmp_path / "linked.db"
    with ServerProcess(db):
        pass
    os.link(db, tmp_path / "other-name.db")
    with ServerProcess(db) as served:
        assert cli(served.address, "workflows", "list").code == 0
    assert "has 2 hard links" in served.log


def test_serve_imports_workflow_modules_from_the_working_directory(tmp_path: Path) -> None:
    """README's "Your own workflows": `waystation serve --workflows myapp.workflows`, run
    where `myapp/` is, serves it (the installed script, not `python -m`)."""
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "workflows.py").write_text(
        "from waystation import create_step, create_workflow\n"
        "async def hello(ctx):\n"
        "    return {'hello': 'world'}\n"
        "hello = create_workflow(id='hello').then(create_step(id='hi', execute=hello)).commit()\n"
    )
    server = ServerProcess(
        tmp_path / "app.db", workflows=["myapp.workflows"], cwd=tmp_path, console_script=True
    )
    with server:
        outcome = cli(server.address, "runs", "start", "hello")
        assert outcome.code == 0, outcome.stderr
        assert "world" in outcome.stdout


# -- runs watch, restart, time-travel, delete ---------------------------------------------


@pytest.fixture(scope="module")
def flows_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("cli-flows") / "flows.db"
    with ServerProcess(
        db, workflows=["waystation.examples", "tests.support.flows", "tests.support.flows_extra"]
    ) as process:
        yield process


def event_lines(stdout: str) -> list[list[str]]:
    """The watch's event lines split into columns: sequence, date, time, type, step, status."""
    return [line.split() for line in stdout.splitlines() if line.strip()]


class Watcher:
    """`waystation runs watch` in the background, its output read line by line as it comes."""

    def __init__(self, address: str, *args: str) -> None:
        command = [sys.executable, "-m", "waystation.cli", "--server", address, "runs", "watch"]
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CLI_ENV,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, *words: str, timeout: float = 15) -> str:
        """The first line that contains every word in `words`, once it has been printed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {words} in: {self.seen}") from None
            self.seen.append(line)
            if all(word in line.split() for word in words):
                return line

    def finish(self, timeout: float = 20) -> Outcome:
        """Wait for the process to exit; the rest of its output."""
        code = self.process.wait(timeout)
        self.reader.join(timeout)  # it stops at the end of the output
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        assert self.process.stderr is not None
        return Outcome(code, "".join(rest), self.process.stderr.read())

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def test_watch_of_a_finished_run_replays_its_events_and_exits_0(
    server: ServerProcess, run_id: str
) -> None:
    start_order(server, run_id)
    assert cli(server.address, "runs", "resume", run_id, "--data", APPROVE).code == 0
    outcome = cli(server.address, "runs", "watch", run_id)
    assert outcome.code == 0, outcome.stderr
    events = event_lines(outcome.stdout)
    assert [int(e[0]) for e in events] == list(range(1, len(events) + 1))
    assert events[0][3:] == ["RUN_STARTED", "-", "running"]
    assert events[-1][3:] == ["RUN_SETTLED", "-", "success"]
    kinds = [(e[3], e[4]) for e in events]
    assert ("STEP_SUSPENDED", "approval") in kinds
    assert ("STEP_RESUMED", "approval") in kinds
    later = cli(server.address, "runs", "watch", run_id, "--after", "2")
    assert later.code == 0, later.stderr
    assert event_lines(later.stdout) == events[2:]


def test_watch_follows_a_suspended_run_live_until_another_command_resumes_it(
    server: ServerProcess, run_id: str
) -> None:
    start_order(server, run_id)
    watcher = Watcher(server.address, run_id)
    try:
        watcher.wait_for("RUN_SETTLED", "suspended")
        assert watcher.process.poll() is None  # the run is not final: the watch goes on
        resumed = cli(server.address, "runs", "resume", run_id, "--data", APPROVE)
        assert resumed.code == 0, resumed.stderr
        watcher.wait_for("STEP_RESUMED", "approval")
        watcher.wait_for("RUN_SETTLED", "success")
        outcome = watcher.finish()
    finally:
        watcher.kill()
    assert outcome.code == 0, outcome.stderr
    assert outcome.stdout.strip() == ""  # nothing after the final event


def test_watch_with_json_prints_one_event_object_per_line(
    server: ServerProcess, run_id: str
) -> None:
    start_order(server, run_id)
    cli(server.address, "runs", "cancel", run_id)
    outcome = cli(server.address, "--json", "runs", "watch", run_id)
    assert outcome.code == 0, outcome.stderr
    events = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert events[0]["type"] == "RUN_EVENT_TYPE_RUN_STARTED"
    assert events[-1]["type"] == "RUN_EVENT_TYPE_RUN_SETTLED"
    assert events[-1]["runStatus"] == "RUN_STATUS_CANCELED"


def test_delete_removes_the_run_so_show_and_watch_exit_5(
    server: ServerProcess, run_id: str
) -> None:
    start_order(server, run_id)
    cli(server.address, "runs", "cancel", run_id)
    deleted = cli(server.address, "runs", "delete", run_id)
    assert deleted.code == 0, deleted.stderr
    assert f"deleted {run_id}" in deleted.stdout
    for command in ("show", "watch", "delete"):
        outcome = cli(server.address, "runs", command, run_id)
        assert outcome.code == 5, (command, outcome.stderr)
        assert "RUN_NOT_FOUND" in outcome.stderr


def test_restart_of_a_finished_run_exits_9(server: ServerProcess, run_id: str) -> None:
    start_order(server, run_id)
    cli(server.address, "runs", "cancel", run_id)
    outcome = cli(server.address, "runs", "restart", run_id)
    assert outcome.code == 9
    assert "RUN_NOT_ACTIVE" in outcome.stderr


def test_time_travel_reruns_from_a_step_with_new_input_keeping_the_steps_before_it(
    flows_server: ServerProcess, run_id: str, tmp_path: Path
) -> None:
    log = tmp_path / "arithmetic.log"
    data = json.dumps({"log": str(log), "x": 3})
    started = cli(
        flows_server.address,
        "--json",
        "runs",
        "start",
        "arithmetic",
        "--data",
        data,
        "--run-id",
        run_id,
    )
    assert started.code == 0, started.stderr
    assert json.loads(started.stdout)["result"]["x"] == 107  # (3 * 2 + 100) + 1
    new_input = tmp_path / "plus.json"
    new_input.write_text(json.dumps({"log": str(log), "x": 10}), encoding="utf-8")
    travelled = cli(
        flows_server.address,
        "--json",
        "runs",
        "time-travel",
        run_id,
        "--step",
        "plus",
        "--data",
        f"@{new_input}",
    )
    assert travelled.code == 0, travelled.stderr
    result = json.loads(travelled.stdout)
    assert result["status"] == "RUN_STATUS_SUCCESS"
    assert result["result"]["x"] == 11
    assert lines(log) == ["double:3.0", "plus:106.0", "plus:10.0"]
    shown = cli(flows_server.address, "runs", "show", run_id)
    assert '"x": 11' in shown.stdout


def test_time_travel_with_resume_data_resumes_a_suspended_step(
    flows_server: ServerProcess, run_id: str
) -> None:
    start_order(flows_server, run_id)
    outcome = cli(
        flows_server.address,
        "runs",
        "time-travel",
        run_id,
        "--step",
        "approval",
        "--resume-data",
        APPROVE,
    )
    assert outcome.code == 0, outcome.stderr
    assert "success" in outcome.stdout
    assert "fulfilled" in outcome.stdout


def test_the_paths_workflows_list_shows_are_the_paths_resume_takes(
    flows_server: ServerProcess,
) -> None:
    """Steps inside blocks (parallel, foreach) and nested workflows are listed as the
    dotted paths `runs resume --step` takes: a block adds no segment."""
    shown = cli(flows_server.address, "workflows", "list")
    assert shown.code == 0, shown.stderr
    cells = _rows(shown.stdout)
    can_suspend = {row[0]: row[2] for row in cells if len(row) == 4}
    assert can_suspend["outer-pair"] == "inner-pair.left, inner-pair.right"
    assert can_suspend["two-approvals"] == "a, b"
    assert can_suspend["items-1"] == "item"
    for workflow, data, step in [
        ("outer-pair", {}, "inner-pair.left"),
        ("items-1", [{"name": "x", "ask": True}], "item"),
    ]:
        run_id = f"paths-{uuid.uuid4().hex[:8]}"
        args = ["runs", "start", workflow, "--data", json.dumps(data), "--run-id", run_id]
        started = cli(flows_server.address, *args)
        assert started.code == 0, started.stderr
        args = ["runs", "resume", run_id, "--step", step, "--data", '{"ok": true}']
        resumed = cli(flows_server.address, *args)
        assert resumed.code == 0, resumed.stderr
    shown = cli(flows_server.address, "workflows", "show", "items-1")
    assert "step item\n" in shown.stdout
    assert "item.item" not in shown.stdout


def test_foreach_index_resumes_that_item_alone_and_state_reaches_the_run(
    flows_server: ServerProcess, run_id: str
) -> None:
    """`runs resume --foreach-index 1` resumes item 1 only (item 0 still waits), and
    `runs start --state` gives the run its initial state."""
    items = [{"name": "x", "ask": True}, {"name": "y", "ask": True}]
    args = ["runs", "start", "items-3", "--data", json.dumps(items), "--run-id", run_id]
    assert cli(flows_server.address, *args).code == 0
    args = ["--json", "runs", "resume", run_id, "--foreach-index", "1", "--data", '{"ok": true}']
    resumed = cli(flows_server.address, *args)
    assert resumed.code == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["status"] == "RUN_STATUS_SUSPENDED"
    items_now = result["steps"]["item"]["items"]
    assert [items_now[i]["status"] for i in ("0", "1")] == [
        "STEP_STATUS_SUSPENDED",
        "STEP_STATUS_SUCCESS",
    ]
    args = ["--json", "runs", "start", "state-poked", "--data", "{}", "--state", '{"hits": 5}']
    started = cli(flows_server.address, *args)
    assert started.code == 0, started.stderr
    assert json.loads(started.stdout)["result"] == {"hits": 6, "limit": 3}


def test_the_label_of_a_suspended_foreach_item_names_the_item(
    flows_server: ServerProcess, run_id: str
) -> None:
    items = [{"name": "a"}, {"name": "b", "ask": True}]
    args = ["runs", "start", "items-1", "--data", json.dumps(items), "--run-id", run_id]
    started = cli(flows_server.address, *args)
    assert started.code == 0, started.stderr
    assert "label item-b -> item[1]" in started.stdout


def test_items_of_a_foreach_inside_a_foreach_print_under_their_outer_item(
    flows_server: ServerProcess, run_id: str
) -> None:
    """Each waiting item is printed with its payload as `step[i][j]` (item j of the inner
    foreach in item i of the outer one), and so is each row of the steps table."""
    groups = [[{"name": "a"}, {"name": "b", "ask": True}], [{"name": "c", "ask": True}]]
    args = ["runs", "start", "group-flows", "--data", json.dumps(groups), "--run-id", run_id]
    started = cli(flows_server.address, *args)
    assert started.code == 0, started.stderr
    waiting = [line.strip() for line in started.stdout.splitlines() if "check" in line]
    assert 'group-flow.check[0][1]  {"check": "b"}' in waiting
    assert 'group-flow.check[1][0]  {"check": "c"}' in waiting
    assert not any(line.startswith("group-flow.check[0][0]  {") for line in waiting)
    shown = cli(flows_server.address, "runs", "show", run_id)
    rows = {cells[0]: cells[1] for cells in _rows(shown.stdout) if len(cells) == 3}
    assert rows["group-flow.check[0]"] == "suspended"
    assert rows["group-flow.check[0][0]"] == "success"
    assert rows["group-flow.check[0][1]"] == "suspended"
    assert rows["group-flow.check[1][0]"] == "suspended"


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines()]


def test_a_start_that_runs_out_of_time_names_the_run_that_goes_on(
    flows_server: ServerProcess, run_id: str, tmp_path: Path
) -> None:
    """The run a start that ran out of time began goes on; the hint names it when the
    command chose its id, and otherwise says how to make the next start safe to retry."""
    data = json.dumps({"log": str(tmp_path / "log"), "seconds": 3})
    args = ["--timeout", "0.5", "runs", "start", "interruptible", "--data", data]
    named = cli(flows_server.address, *args, "--run-id", run_id)
    assert named.code == 4, named.stderr
    assert f"see how it ends with `waystation runs show {run_id}`" in named.stderr
    shown = cli(flows_server.address, "--json", "runs", "show", run_id)
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "RUN_STATUS_RUNNING"
    anonymous = cli(flows_server.address, *args)
    assert anonymous.code == 4, anonymous.stderr
    assert "pass --run-id or --request-id next time" in anonymous.stderr
    assert "runs show" not in anonymous.stderr


def test_time_travel_to_an_unknown_step_exits_3(flows_server: ServerProcess, run_id: str) -> None:
    start_order(flows_server, run_id)
    outcome = cli(flows_server.address, "runs", "time-travel", run_id, "--step", "nowhere")
    assert outcome.code == 3
    assert "INVALID_ARGUMENT" in outcome.stderr


# -- TLS, mutual TLS and bearer tokens ------------------------------------------------------

TOKEN = f"ws-cli-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Pki:
    ca: Path
    trust: grpc.ChannelCredentials
    """Trusts the CA: the test's own channel to a TLS server."""
    server: list[str]
    """`waystation serve` options: a certificate for 127.0.0.1 signed by the CA, its key."""
    client: tuple[Path, Path]
    """A client certificate (CN cli-client) and its key."""
    mutual: grpc.ChannelCredentials
    """Trusts the CA and presents the client certificate."""
    policy: Path
    """Allows everything to the token TOKEN and to the identity cli-client."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("cli-pki")
    ca = Authority.new("cli test CA")
    cert, key = ca.issue("localhost", ips=["127.0.0.1"], server=True).write(folder / "server")
    client = ca.issue("cli-client")
    policy = folder / "policy.json"
    credentials = [
        {"name": "cli-token", "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()},
        {"name": "cli-cert", "mtls_identity": "cli-client"},
    ]
    policy.write_text(json.dumps({"credentials": credentials}), encoding="utf-8")
    return Pki(
        ca=ca.write(folder / "ca.crt"),
        trust=grpc.ssl_channel_credentials(ca.cert_pem),
        server=["--tls-cert", str(cert), "--tls-key", str(key)],
        client=client.write(folder / "client"),
        mutual=grpc.ssl_channel_credentials(ca.cert_pem, client.key_pem, client.cert_pem),
        policy=policy,
    )


def test_serve_names_the_tls_file_it_cannot_use(pki: Pki, tmp_path: Path) -> None:
    """A client CA without a certificate and key (it served plain text, checking nothing),
    a file that is no certificate, a key of another certificate, a client CA that holds no
    certificate: one line naming the option, exit 1; not "cannot listen on" the port."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert, key = pki.server[1], pki.server[3]
    other_key = tmp_path / "other.key"
    other_key.write_bytes(pki.client[1].read_bytes())
    cases = {
        "--tls-client-ca needs --tls-cert and --tls-key": ["--tls-client-ca", str(pki.ca)],
        f"--tls-cert {garbage}": ["--tls-cert", str(garbage), "--tls-key", key],
        f"--tls-key {other_key}": ["--tls-cert", cert, "--tls-key", str(other_key)],
        f"--tls-client-ca {garbage}": [*pki.server, "--tls-client-ca", str(garbage)],
    }
    for words, args in cases.items():
        server = ServerProcess(tmp_path / "bad-tls.db", extra_args=args)
        done = subprocess.run(server.command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (args, done.stderr)
        said = " ".join(done.stderr.split())
        assert f"cannot start: {words}" in said or ("cannot start:" in said and words in said), said
        assert "cannot listen" not in said and "Traceback" not in said, said


def test_a_tls_server_is_reached_with_the_ca_of_tls_ca_or_its_variable(
    pki: Pki, tmp_path: Path
) -> None:
    with ServerProcess(tmp_path / "tls.db", extra_args=pki.server, tls=pki.trust) as server:
        by_option = cli(server.address, "--tls-ca", str(pki.ca), "workflows", "list")
        assert by_option.code == 0, by_option.stderr
        assert "order-approval" in by_option.stdout
        by_variable = cli(
            server.address, "workflows", "list", env={"WAYSTATION_TLS_CA": str(pki.ca)}
        )
        assert by_variable.code == 0, by_variable.stderr
        plain = cli(server.address, "workflows", "list")
        assert plain.code == 14, plain.stderr


def test_client_tls_variables_are_checked_by_client_commands_and_not_by_serve(
    tmp_path: Path,
) -> None:
    """A CA file that does not exist is a usage error (exit 2) for a client command; a
    server whose environment holds client variables (set for its healthcheck, say) serves."""
    missing = {"WAYSTATION_TLS_CA": str(tmp_path / "none.pem")}
    with ServerProcess(
        tmp_path / "env-tls.db", env={**missing, "WAYSTATION_TLS_CLIENT_CERT": "x"}
    ) as server:
        refused = cli(server.address, "workflows", "list", env=missing)
        assert refused.code == 2
        assert "--tls-ca" in refused.stderr and "none.pem" in refused.stderr
        assert cli(server.address, "workflows", "list").code == 0


def test_a_mutual_tls_server_takes_the_client_certificate_of_tls_cert_and_tls_key(
    pki: Pki, tmp_path: Path
) -> None:
    """The certificate is the caller's identity in the server's policy."""
    args = [*pki.server, "--tls-client-ca", str(pki.ca), "--auth-config", str(pki.policy)]
    with ServerProcess(tmp_path / "mtls.db", extra_args=args, tls=pki.mutual) as server:
        cert, key = pki.client
        mutual = ["--tls-ca", str(pki.ca), "--tls-cert", str(cert), "--tls-key", str(key)]
        started = cli(server.address, *mutual, "runs", "start", "order-approval", "--data", ORDER)
        assert started.code == 0, started.stderr
        assert "suspended" in started.stdout
        anonymous = cli(server.address, "--tls-ca", str(pki.ca), "workflows", "list")
        assert anonymous.code == 14, anonymous.stderr  # refused at the handshake
        half = cli(server.address, "--tls-ca", str(pki.ca), "--tls-cert", str(cert), "runs", "list")
        assert half.code == 2  # a usage error: no call is made
        assert "--tls-key" in half.stderr


def test_a_bearer_token_from_token_or_its_variable_goes_with_every_call(
    pki: Pki, tmp_path: Path, run_id: str
) -> None:
    """Unary calls and the WatchRun stream carry it; without it the server answers
    UNAUTHENTICATED (exit 16)."""
    args = ["--auth-config", str(pki.policy)]
    with ServerProcess(tmp_path / "token.db", extra_args=args) as server:
        refused = cli(server.address, "workflows", "list")
        assert refused.code == 16, refused.stderr
        assert "UNAUTHENTICATED" in refused.stderr
        start = ["runs", "start", "order-approval", "--data", ORDER, "--run-id", run_id]
        started = cli(server.address, "--token", TOKEN, *start)
        assert started.code == 0, started.stderr
        with_variable = {"WAYSTATION_TOKEN": TOKEN}
        canceled = cli(server.address, "runs", "cancel", run_id, env=with_variable)
        assert canceled.code == 0, canceled.stderr
        watched = cli(server.address, "runs", "watch", run_id, env=with_variable)
        assert watched.code == 0, watched.stderr
        assert "RUN_SETTLED" in watched.stdout
        assert cli(server.address, "runs", "watch", run_id).code == 16
        # A token read from a file or a variable often ends with a newline: it is dropped
        # (it was INTERNAL "Invalid metadata", exit 13, from gRPC, before any call).
        newline = cli(server.address, "--token", f"{TOKEN}\n", "runs", "show", run_id)
        assert newline.code == 0, newline.stderr


@pytest.mark.parametrize("token", ["t\u00f6k\u00e9n", "two words", "tab\tinside"])
def test_a_token_no_header_can_carry_is_a_usage_error(token: str) -> None:
    """It was INTERNAL "Invalid metadata" (exit 13), as if the server had failed."""
    outcome = cli("127.0.0.1:9", "--token", token, "workflows", "list")
    assert outcome.code == 2
    assert "--token" in one_line_error(outcome)
    assert "printable ASCII" in one_line_error(outcome)


def test_a_tls_server_name_alone_turns_tls_on() -> None:
    """--tls-server-name only means something to TLS: alone, it checks the server against
    the system's trusted roots, as --tls-cert alone does (it went unencrypted)."""
    assert Credentials(tls_server_name="waystation.internal").tls
    assert not Credentials(token="t").tls


def one_line_error(outcome: Outcome) -> str:
    """The error an outcome printed, folded onto one line; no traceback, no gRPC log."""
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert not re.search(r"^[EIW]\d{4} ", outcome.stderr, re.M), outcome.stderr
    return " ".join(outcome.stderr.split())


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ('{"question": "\\udc80"}', "not valid UTF-8"),
        ("[" * 150 + "]" * 150, "cannot be sent"),
        ("@bin", "is not UTF-8 text"),
        ("[" * 3000, "nested too deeply"),
    ],
    ids=["lone-surrogate", "deeper-than-protobuf", "file-not-utf8", "deeper-than-python"],
)
def test_data_the_cli_cannot_send_is_a_usage_error(
    server: ServerProcess, tmp_path: Path, data: str, said: str
) -> None:
    """Valid JSON that no request can carry, or a file that is not text, is a usage error
    (exit 2) in one line; it printed a traceback and exited 1."""
    if data == "@bin":
        (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
        data = f"@{tmp_path / 'bin.json'}"
    outcome = cli(server.address, "runs", "start", "ask-human", "--data", data)
    assert outcome.code == 2
    assert said in one_line_error(outcome)


@pytest.mark.parametrize(
    ("address", "said"),
    [("127.0.0.1:115530", "port 115530 is above 65535"), ("127.0.0.1", "needs a port")],
)
def test_a_server_address_grpc_would_misread_is_a_usage_error(address: str, said: str) -> None:
    """grpc takes a port modulo 65536 (another server's, maybe) and a missing one as 443."""
    outcome = cli(address, "workflows", "list")
    assert outcome.code == 2
    assert said in one_line_error(outcome)


def test_a_client_tls_file_that_is_not_pem_is_a_usage_error_naming_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """It was UNAVAILABLE (the server seemed down) after lines of gRPC's C-core log."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    outcome = cli(server.address, "--tls-ca", str(not_pem), "workflows", "list")
    assert outcome.code == 2
    assert f"--tls-ca {not_pem}: no PEM certificate" in one_line_error(outcome)


def test_serve_names_the_tls_file_that_is_missing(tmp_path: Path) -> None:
    cert, _ = Authority.new("test CA").issue("localhost", server=True).write(tmp_path / "s")
    server = ServerProcess(tmp_path / "tls.db")
    missing = tmp_path / "missing-key.pem"
    command = [*server.command, "--tls-cert", str(cert), "--tls-key", str(missing)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"--tls-key {missing}: no such file" in " ".join(done.stderr.split())


def test_serve_without_a_port_or_on_a_busy_one_says_why_in_one_line(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "noport.db")
    server.address = "127.0.0.1"
    done = subprocess.run(server.command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "needs a port, as HOST:PORT" in " ".join(done.stderr.split())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server.address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(server.command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    error = " ".join(done.stderr.split())
    assert "Address already in use" in error and not re.search(r"E\d{4} ", error)


def test_a_suspended_foreach_shows_each_waiting_item_with_its_payload(tmp_path: Path) -> None:
    """`runs start` lists every waiting item of a foreach with its own payload (it showed
    one payload, unlabelled, whichever item it was)."""
    items = json.dumps([{"name": "x", "ask": True}, {"name": "y", "ask": True}, {"name": "z"}])
    with ServerProcess(tmp_path / "items.db", workflows=["tests.support.flows"]) as server:
        outcome = cli(server.address, "runs", "start", "items-3", "--data", items)
    assert outcome.code == 0, outcome.stderr
    shown = [line.strip() for line in outcome.stdout.splitlines()]
    assert 'item[0]  {"item": "x"}' in shown
    assert 'item[1]  {"item": "y"}' in shown
    assert "label item-y -> item[1]" in shown


def test_json_output_has_every_field_also_when_empty(server: ServerProcess) -> None:
    """`--json runs list` with nothing to list prints `"runs": []` (it printed `{}`, and
    `jq '.runs[]'` failed); fields at their default are printed too."""
    outcome = cli(server.address, "--json", "runs", "list", "--workflow", "no-such-workflow")
    assert outcome.code == 0, outcome.stderr
    assert json.loads(outcome.stdout) == {"runs": [], "nextPageToken": ""}
