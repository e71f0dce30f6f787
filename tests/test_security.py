"""Security (issue 8, item 3), through a real TLS server and real TLS channels.

Certificates come from throw-away CAs made in the test (`tests/support/certificates.py`):
the server's certificate is for localhost / 127.0.0.1; client certificates carry the common
names and subject alternative names that the policy file names as mTLS identities. The
policy file stores only SHA-256 hashes of the bearer tokens (`transport/auth.py`).

Every refusal is shown with its status code and `ErrorInfo` reason:
- TLS: plain text, or a client that does not trust the server's CA, cannot connect
  (UNAVAILABLE); with a client CA (mutual TLS) a client without a certificate, or with one
  of another CA, is refused at the handshake (UNAVAILABLE).
- No credential, or a wrong one: UNAUTHENTICATED. An action or tenant (resource_id prefix)
  outside the credential's scope: PERMISSION_DENIED (principal and action in the metadata),
  except calls on another tenant's run, which look exactly like calls on a missing run
  (NOT_FOUND, RUN_NOT_FOUND), so that no call tells whether it exists; ListRuns shows only
  the caller's tenants, prefixes taken literally.
- Who resumed a step is recorded on it (`resumed_by`, the credential's name).
- Tokens never appear in logs or spans (in-process with caplog and an in-memory span
  exporter, and in a server process's output with the console span exporter).
- Ids and filters reach SQL only as bound values: injection attempts are plain data.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import serving as running_server
from tests.conftest import settings_for
from tests.support.api import RichError, call_error, rich_error, to_json, value
from tests.support.certificates import Authority, Issued
from tests.support.server_process import ServerProcess
from tests.support.tracing import console_spans
from tests.support.workflows import lines
from waystation.api.v1 import enums_pb2, message_pb2
from waystation.api.v1 import request_response_pb2 as rr
from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub
from waystation.transport import RunningServer, create_server
from waystation.transport.auth import AuthPolicy

RUN = enums_pb2.RunStatus
EV = enums_pb2.RunEventType
Metadata = tuple[tuple[str, str], ...]

# Fresh random tokens per test session: a match in a log cannot be a coincidence.
TOKENS = {
    name: f"ws-{name}-{secrets.token_hex(16)}"
    for name in (
        "billing-ops",
        "orders-ops",
        "billing-reader",
        "billing-starter",
        "root",
        "literal",
        "quoted",
    )
}
WRONG_TOKEN = f"ws-wrong-{secrets.token_hex(16)}"
DIGEST = hashlib.sha256(b"a token").hexdigest()
QUOTED_TENANT = "q'); DROP TABLE runs; --/"
INJECTION = "x'; DROP TABLE runs; --"

CREDENTIALS: list[dict[str, Any]] = [
    {
        "name": "billing-ops",
        "tenants": ["billing/"],
        "actions": ["start", "resume", "cancel", "read"],
    },
    {
        "name": "orders-ops",
        "tenants": ["orders/"],
        "actions": ["start", "resume", "cancel", "read"],
    },
    {"name": "billing-reader", "tenants": ["billing/"], "actions": ["read"]},
    {"name": "billing-starter", "tenants": ["billing/"], "actions": ["start"]},
    {"name": "root", "actions": ["*"]},
    {"name": "literal", "tenants": ["a%b/", "c_d/"], "actions": ["*"]},
    {"name": "quoted", "tenants": [QUOTED_TENANT], "actions": ["*"]},
]
IDENTITIES: list[dict[str, Any]] = [
    # matched by the certificate's common name
    {
        "name": "billing-cert",
        "mtls_identity": "billing-client",
        "tenants": ["billing/"],
        "actions": ["start", "resume", "read"],
    },
    # matched by a DNS subject alternative name (the CN orders-client is not in the policy)
    {
        "name": "orders-cert",
        "mtls_identity": "orders.internal",
        "tenants": ["orders/"],
        "actions": ["*"],
    },
]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def as_(name: str) -> Metadata:
    """The metadata of a call made with the named credential's token."""
    return bearer(TOKENS[name])


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- certificates and policy --------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Authority
    other_ca: Authority
    ca_file: Path
    server_cert: Path
    server_key: Path
    policy: Path
    billing: Issued
    """CN billing-client: the policy's billing-cert identity."""
    orders: Issued
    """CN orders-client, SAN orders.internal: the policy's orders-cert identity."""
    stranger: Issued
    """Signed by the CA, but its names are in no policy entry."""
    forged: Issued
    """CN billing-client, signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = Authority.new("waystation test CA"), Authority.new("someone else's CA")
    server = ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"], server=True)
    cert, key = server.write(folder / "server")
    policy = folder / "policy.json"
    credentials = [
        {**entry, "token_sha256": hashlib.sha256(TOKENS[entry["name"]].encode()).hexdigest()}
        for entry in CREDENTIALS
    ]
    policy.write_text(json.dumps({"credentials": credentials + IDENTITIES}))
    return Pki(
        ca=ca,
        other_ca=other,
        ca_file=ca.write(folder / "ca.crt"),
        server_cert=cert,
        server_key=key,
        policy=policy,
        billing=ca.issue("billing-client"),
        orders=ca.issue("orders-client", dns=["orders.internal"]),
        stranger=ca.issue("stranger", dns=["stranger.internal"]),
        forged=other.issue("billing-client"),
    )


# -- servers and channels -----------------------------------------------------------------


def serving(
    db_path: Path, pki: Pki, *, mutual: bool = False, **more: Any
) -> AbstractAsyncContextManager[RunningServer]:
    settings = settings_for(
        db_path,
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca_file) if mutual else "",
        auth_config=str(pki.policy),
    )
    return running_server(settings, **more)


@pytest.fixture
async def tls_server(db_path: Path, pki: Pki) -> AsyncIterator[RunningServer]:
    """TLS (no client certificates), bearer tokens."""
    async with serving(db_path, pki) as running:
        yield running


@pytest.fixture
async def mtls_server(db_path: Path, pki: Pki) -> AsyncIterator[RunningServer]:
    """Mutual TLS: clients must present a certificate signed by the test CA."""
    async with serving(db_path, pki, mutual=True) as running:
        yield running


@asynccontextmanager
async def connect(
    port: int,
    *,
    trust: bytes | None,
    client: Issued | None = None,
    options: list[tuple[str, Any]] | None = None,
    call_credentials: grpc.CallCredentials | None = None,
) -> AsyncIterator[WorkflowServiceStub]:
    """A real TLS channel to 127.0.0.1:port trusting `trust` (None: plain text)."""
    target = f"127.0.0.1:{port}"
    if trust is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        credentials = grpc.ssl_channel_credentials(
            trust,
            client.key_pem if client else None,
            client.cert_pem if client else None,
        )
        if call_credentials is not None:
            credentials = grpc.composite_channel_credentials(credentials, call_credentials)
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    async with channel:
        yield WorkflowServiceStub(channel)


@pytest.fixture
async def stub(tls_server: RunningServer, pki: Pki) -> AsyncIterator[WorkflowServiceStub]:
    """A TLS client of `tls_server` that trusts the CA; credentials go per call."""
    async with connect(tls_server.port, trust=pki.ca.cert_pem) as client:
        yield client


async def start(
    stub: WorkflowServiceStub,
    metadata: Metadata,
    resource_id: str,
    log: Path,
    run_id: str = "",
    **more: Any,
) -> message_pb2.WorkflowResult:
    """Start a `counted` run (one -> gate, which suspends -> two) for `resource_id`."""
    return await stub.StartRun(
        rr.StartRunRequest(
            workflow_id="counted",
            run_id=run_id or new_id("sec"),
            resource_id=resource_id,
            input_data=value({"log": str(log)}),
            **more,
        ),
        metadata=metadata,
        timeout=20,
    )


async def resume(
    stub: WorkflowServiceStub, metadata: Metadata, run_id: str, n: int = 1, **more: Any
) -> message_pb2.WorkflowResult:
    return await stub.ResumeRun(
        rr.ResumeRequest(run_id=run_id, resume_data=value({"value": n}), **more),
        metadata=metadata,
        timeout=20,
    )


async def get(stub: WorkflowServiceStub, metadata: Metadata, run_id: str) -> message_pb2.Run:
    return await stub.GetRun(rr.GetRunRequest(run_id=run_id), metadata=metadata, timeout=10)


async def watch(
    stub: WorkflowServiceStub, metadata: Metadata, run_id: str
) -> list[message_pb2.RunEvent]:
    """The events of a run (the stream ends once the run is final)."""
    call = stub.WatchRun(rr.WatchRunRequest(run_id=run_id), metadata=metadata, timeout=10)
    return [event async for event in call]


async def watch_error(stub: WorkflowServiceStub, metadata: Metadata, run_id: str) -> RichError:
    try:
        await watch(stub, metadata, run_id)
    except grpc.aio.AioRpcError as exc:
        return rich_error(exc)
    raise AssertionError("WatchRun succeeded but was expected to fail")


async def listed(stub: WorkflowServiceStub, metadata: Metadata, **filters: Any) -> list[str]:
    """The resource ids of every run the caller may list (all pages)."""
    out: list[str] = []
    token = ""
    while True:
        page = await stub.ListRuns(
            rr.ListRunsRequest(page_size=2, page_token=token, **filters),
            metadata=metadata,
            timeout=10,
        )
        out += [run.resource_id for run in page.runs]
        token = page.next_page_token
        if not token:
            return sorted(out)


def assert_refused(error: RichError, code: grpc.StatusCode, reason: str) -> None:
    assert (error.code, error.reason, error.domain) == (code, reason, "waystation.dev"), error


def assert_denied(error: RichError, principal: str, action: str) -> None:
    assert_refused(error, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert error.metadata == {"principal": principal, "action": action}, error


async def assert_unavailable(call: Any) -> None:
    error = await call_error(call)
    assert error.code == grpc.StatusCode.UNAVAILABLE, error


# -- TLS ----------------------------------------------------------------------------------


async def test_a_plain_text_client_cannot_talk_to_the_tls_server(
    tls_server: RunningServer,
) -> None:
    async with connect(tls_server.port, trust=None) as plain:
        await assert_unavailable(
            plain.ListWorkflows(rr.ListWorkflowsRequest(), metadata=as_("root"), timeout=5)
        )


async def test_a_client_that_trusts_the_ca_talks_to_the_tls_server(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    workflows = await stub.ListWorkflows(rr.ListWorkflowsRequest(), metadata=as_("root"), timeout=5)
    assert "counted" in [w.workflow_id for w in workflows.workflows]
    started = await start(stub, as_("billing-ops"), "billing/1", tmp_path / "log")
    assert started.status == RUN.RUN_STATUS_SUSPENDED


async def test_a_client_that_does_not_trust_the_servers_ca_is_refused(
    tls_server: RunningServer, pki: Pki
) -> None:
    async with connect(tls_server.port, trust=pki.other_ca.cert_pem) as untrusting:
        await assert_unavailable(
            untrusting.ListWorkflows(rr.ListWorkflowsRequest(), metadata=as_("root"), timeout=5)
        )


async def test_a_client_refuses_a_server_certificate_for_another_name(
    tls_server: RunningServer, pki: Pki
) -> None:
    """The certificate is checked against the name the client expects, not only the CA."""
    options = [("grpc.ssl_target_name_override", "elsewhere.example")]
    async with connect(tls_server.port, trust=pki.ca.cert_pem, options=options) as client:
        await assert_unavailable(
            client.ListWorkflows(rr.ListWorkflowsRequest(), metadata=as_("root"), timeout=5)
        )


# -- mutual TLS -----------------------------------------------------------------------------


async def test_mtls_refuses_a_client_without_a_certificate_at_the_handshake(
    mtls_server: RunningServer, pki: Pki
) -> None:
    """Even with a valid bearer token: the handshake fails before any call is seen."""
    async with connect(mtls_server.port, trust=pki.ca.cert_pem) as anonymous:
        await assert_unavailable(
            anonymous.ListWorkflows(rr.ListWorkflowsRequest(), metadata=as_("root"), timeout=5)
        )


async def test_mtls_refuses_a_certificate_of_another_ca(
    mtls_server: RunningServer, pki: Pki
) -> None:
    """A certificate with an allowed common name, signed by another CA, is refused."""
    async with connect(mtls_server.port, trust=pki.ca.cert_pem, client=pki.forged) as forged:
        await assert_unavailable(forged.ListWorkflows(rr.ListWorkflowsRequest(), timeout=5))


async def test_mtls_admits_a_certificate_of_the_ca_whose_name_is_in_the_policy(
    mtls_server: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    """The common name billing-client is the credential billing-cert: it starts and
    resumes a billing run, and is recorded as the one who resumed it."""
    log = tmp_path / "log"
    async with connect(mtls_server.port, trust=pki.ca.cert_pem, client=pki.billing) as client:
        started = await start(client, (), "billing/1", log)
        assert started.status == RUN.RUN_STATUS_SUSPENDED
        resumed = await resume(client, (), started.run_id, 5)
        assert resumed.status == RUN.RUN_STATUS_SUCCESS
        assert resumed.steps["gate"].resumed_by == "billing-cert"
        run = await get(client, (), started.run_id)
        assert run.result.steps["gate"].resumed_by == "billing-cert"
    assert lines(log) == ["one", "gate", "two"]


async def test_a_subject_alternative_name_identifies_the_client(
    mtls_server: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    """orders-client is in no policy entry, its SAN orders.internal is (credential
    orders-cert, tenant orders/)."""
    async with connect(mtls_server.port, trust=pki.ca.cert_pem, client=pki.orders) as client:
        started = await start(client, (), "orders/1", tmp_path / "log")
        resumed = await resume(client, (), started.run_id)
        assert resumed.steps["gate"].resumed_by == "orders-cert"
        denied = await call_error(start(client, (), "billing/1", tmp_path / "log"))
        assert_denied(denied, "orders-cert", "start")


async def test_a_certificate_of_the_ca_that_no_policy_entry_names_is_unauthenticated(
    mtls_server: RunningServer, pki: Pki
) -> None:
    """The handshake succeeds (the CA signed it), but the certificate is no credential."""
    async with connect(mtls_server.port, trust=pki.ca.cert_pem, client=pki.stranger) as client:
        error = await call_error(client.ListRuns(rr.ListRunsRequest(), timeout=5))
        assert_refused(error, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_mtls_identities_are_scoped_like_tokens(
    mtls_server: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    """billing-cert (tenant billing/; start, resume, read) against orders-cert's run: the
    same refusals as for a token (a resume of their run, as a read, finds no such run)."""
    log = tmp_path / "log"
    async with AsyncExitStack() as stack:
        billing = await stack.enter_async_context(
            connect(mtls_server.port, trust=pki.ca.cert_pem, client=pki.billing)
        )
        orders = await stack.enter_async_context(
            connect(mtls_server.port, trust=pki.ca.cert_pem, client=pki.orders)
        )
        theirs = await start(orders, (), "orders/1", log)
        mine = await start(billing, (), "billing/1", log)

        assert_denied(
            await call_error(start(billing, (), "orders/2", log)), "billing-cert", "start"
        )
        hidden = await call_error(resume(billing, (), theirs.run_id))
        assert_refused(hidden, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
        # billing-cert may not cancel at all, not even its own runs
        cancel = billing.CancelRun(rr.CancelRunRequest(run_id=mine.run_id), timeout=5)
        assert_denied(await call_error(cancel), "billing-cert", "cancel")
        delete = billing.DeleteRun(rr.DeleteRunRequest(run_id=mine.run_id), timeout=5)
        assert_denied(await call_error(delete), "billing-cert", "admin")
        hidden = await call_error(get(billing, (), theirs.run_id))
        assert_refused(hidden, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
        hidden = await watch_error(billing, (), theirs.run_id)
        assert_refused(hidden, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
        assert await listed(billing, ()) == ["billing/1"]
        assert await listed(orders, ()) == ["orders/1"]
        assert (await get(orders, (), theirs.run_id)).status == RUN.RUN_STATUS_SUSPENDED


async def test_a_token_and_a_certificate_each_stand_for_their_own_credential(
    mtls_server: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    """A bearer token sent over an mTLS channel is the credential (the call is the token's,
    not the certificate's); a wrong token is not excused by a good certificate."""
    async with connect(mtls_server.port, trust=pki.ca.cert_pem, client=pki.billing) as client:
        started = await start(client, as_("orders-ops"), "orders/1", tmp_path / "log")
        resumed = await resume(client, as_("orders-ops"), started.run_id)
        assert resumed.steps["gate"].resumed_by == "orders-ops"
        wrong = await call_error(get(client, bearer(WRONG_TOKEN), started.run_id))
        assert_refused(wrong, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


# -- bearer tokens: authentication ------------------------------------------------------------


async def test_a_call_without_a_token_is_unauthenticated(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    calls = {
        "ListWorkflows": stub.ListWorkflows(rr.ListWorkflowsRequest(), timeout=5),
        "GetWorkflow": stub.GetWorkflow(rr.GetWorkflowRequest(workflow_id="counted"), timeout=5),
        "StartRun": start(stub, (), "billing/1", tmp_path / "log"),
        "GetRun": get(stub, (), "some-run"),
        "ListRuns": stub.ListRuns(rr.ListRunsRequest(), timeout=5),
        "ResumeRun": resume(stub, (), "some-run"),
        "CancelRun": stub.CancelRun(rr.CancelRunRequest(run_id="some-run"), timeout=5),
        "DeleteRun": stub.DeleteRun(rr.DeleteRunRequest(run_id="some-run"), timeout=5),
    }
    for name, call in calls.items():
        error = await call_error(call)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED, (name, error)
        assert_refused(error, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert_refused(
        await watch_error(stub, (), "some-run"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )
    assert not lines(tmp_path / "log")


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {WRONG_TOKEN}",
        f"Basic {TOKENS['root']}",
        TOKENS["root"],
        "Bearer ",
        # the hash stored in the policy is not itself a credential
        f"Bearer {hashlib.sha256(TOKENS['root'].encode()).hexdigest()}",
    ],
    ids=["wrong-token", "basic-scheme", "no-scheme", "empty-token", "the-stored-hash"],
)
async def test_a_wrong_or_malformed_token_is_unauthenticated(
    stub: WorkflowServiceStub, tmp_path: Path, header: str
) -> None:
    metadata = (("authorization", header),)
    error = await call_error(start(stub, metadata, "billing/1", tmp_path / "log"))
    assert_refused(error, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    error = await call_error(stub.ListRuns(rr.ListRunsRequest(), metadata=metadata, timeout=5))
    assert_refused(error, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert not lines(tmp_path / "log")


async def test_grpc_access_token_call_credentials_carry_the_token(
    tls_server: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    """A client using gRPC's standard `access_token_call_credentials` is authenticated."""
    token = grpc.access_token_call_credentials(TOKENS["billing-ops"])
    async with connect(tls_server.port, trust=pki.ca.cert_pem, call_credentials=token) as client:
        started = await start(client, (), "billing/1", tmp_path / "log")
        resumed = await resume(client, (), started.run_id)
        assert resumed.steps["gate"].resumed_by == "billing-ops"


# -- bearer tokens: authorization -----------------------------------------------------------


async def test_a_read_only_token_may_read_but_not_act(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    run = await start(stub, as_("billing-ops"), "billing/1", log)

    error = await call_error(start(stub, as_("billing-reader"), "billing/2", log))
    assert_denied(error, "billing-reader", "start")
    create = stub.CreateRun(
        rr.CreateRunRequest(workflow_id="counted", resource_id="billing/3"),
        metadata=as_("billing-reader"),
        timeout=5,
    )
    assert_denied(await call_error(create), "billing-reader", "start")
    error = await call_error(resume(stub, as_("billing-reader"), run.run_id))
    assert_denied(error, "billing-reader", "resume")
    error = await call_error(resume(stub, as_("billing-reader"), run.run_id, validate_only=True))
    assert_denied(error, "billing-reader", "resume")
    cancel = stub.CancelRun(
        rr.CancelRunRequest(run_id=run.run_id), metadata=as_("billing-reader"), timeout=5
    )
    assert_denied(await call_error(cancel), "billing-reader", "cancel")
    for admin in (
        stub.DeleteRun(rr.DeleteRunRequest(run_id=run.run_id), metadata=as_("billing-reader")),
        stub.RestartRun(rr.RestartRunRequest(run_id=run.run_id), metadata=as_("billing-reader")),
        stub.TimeTravelRun(
            rr.TimeTravelRunRequest(run_id=run.run_id, step=message_pb2.StepPath(segments=["one"])),
            metadata=as_("billing-reader"),
        ),
    ):
        assert_denied(await call_error(admin), "billing-reader", "admin")

    seen = await get(stub, as_("billing-reader"), run.run_id)
    assert seen.status == RUN.RUN_STATUS_SUSPENDED and seen.result.version == run.version
    assert await listed(stub, as_("billing-reader")) == ["billing/1"]
    assert lines(log) == ["one"]


async def test_a_token_without_the_read_action_may_not_read(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """billing-starter (actions ["start"]) starts a run of its tenant, but reading it, or
    listing runs or workflows, is PERMISSION_DENIED for the action "read"."""
    log = tmp_path / "log"
    run = await start(stub, as_("billing-starter"), "billing/1", log)
    assert run.status == RUN.RUN_STATUS_SUSPENDED
    starter = as_("billing-starter")
    reads = {
        "GetRun": get(stub, starter, run.run_id),
        "ListRuns": stub.ListRuns(rr.ListRunsRequest(), metadata=starter, timeout=5),
        "ListWorkflows": stub.ListWorkflows(rr.ListWorkflowsRequest(), metadata=starter, timeout=5),
        "GetWorkflow": stub.GetWorkflow(
            rr.GetWorkflowRequest(workflow_id="counted"), metadata=starter, timeout=5
        ),
    }
    for name, call in reads.items():
        error = await call_error(call)
        assert error.code == grpc.StatusCode.PERMISSION_DENIED, (name, error)
        assert_denied(error, "billing-starter", "read")
    assert_denied(await watch_error(stub, starter, run.run_id), "billing-starter", "read")


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_is_case_insensitive(
    stub: WorkflowServiceStub, tmp_path: Path, scheme: str
) -> None:
    """`authorization: bearer <token>` (any case, as RFC 7235 makes auth schemes)
    authenticates as `Bearer <token>` does."""
    metadata = (("authorization", f"{scheme} {TOKENS['billing-ops']}"),)
    run = await start(stub, metadata, "billing/1", tmp_path / "log")
    assert run.status == RUN.RUN_STATUS_SUSPENDED
    assert (await get(stub, metadata, run.run_id)).status == RUN.RUN_STATUS_SUSPENDED
    resumed = await resume(stub, metadata, run.run_id)
    assert resumed.steps["gate"].resumed_by == "billing-ops"


@pytest.mark.parametrize("resource_id", ["orders/1", "", "billing", "xbilling/1", "BILLING/1"])
async def test_a_token_may_not_start_a_run_outside_its_tenants(
    stub: WorkflowServiceStub, tmp_path: Path, resource_id: str
) -> None:
    """billing-ops (tenant billing/) starting or creating a run for another resource:
    PERMISSION_DENIED, and no run is created."""
    log = tmp_path / "log"
    run_id = new_id("outside")
    error = await call_error(start(stub, as_("billing-ops"), resource_id, log, run_id))
    assert_denied(error, "billing-ops", "start")
    create = stub.CreateRun(
        rr.CreateRunRequest(workflow_id="counted", run_id=run_id, resource_id=resource_id),
        metadata=as_("billing-ops"),
        timeout=5,
    )
    assert_denied(await call_error(create), "billing-ops", "start")
    missing = await call_error(get(stub, as_("root"), run_id))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert not lines(log)


def assert_hidden(hidden: RichError, missing: RichError, run_id: str, unknown: str) -> None:
    """`hidden` (a call on another tenant's run) answers exactly as `missing` (the same call
    on an id that does not exist), but for the id it names."""
    assert_refused(hidden, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    assert_refused(missing, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    assert hidden.message.replace(run_id, "ID") == missing.message.replace(unknown, "ID")
    assert hidden.metadata == {**missing.metadata, "run_id": run_id}


async def test_resuming_or_canceling_another_tenants_run_looks_like_a_missing_run(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """billing-ops against an orders/ run: resume (also a dry run) and cancel answer as for
    an id that does not exist (so they cannot tell whether it does), and a start of that run
    id is PERMISSION_DENIED; the run is untouched and its steps did not run."""
    log = tmp_path / "log"
    theirs = await start(stub, as_("orders-ops"), "orders/1", log)
    unknown = new_id("nothing")

    calls = {
        "resume": lambda run_id: resume(stub, as_("billing-ops"), run_id),
        "dry run": lambda run_id: resume(stub, as_("billing-ops"), run_id, validate_only=True),
        "cancel": lambda run_id: stub.CancelRun(
            rr.CancelRunRequest(run_id=run_id), metadata=as_("billing-ops"), timeout=5
        ),
    }
    for call in calls.values():
        hidden, missing = await call_error(call(theirs.run_id)), await call_error(call(unknown))
        assert_hidden(hidden, missing, theirs.run_id, unknown)
    again = start(stub, as_("billing-ops"), "billing/1", log, run_id=theirs.run_id)
    assert_denied(await call_error(again), "billing-ops", "start")

    run = await get(stub, as_("orders-ops"), theirs.run_id)
    assert run.status == RUN.RUN_STATUS_SUSPENDED
    assert run.result.version == theirs.version
    assert run.resource_id == "orders/1"
    assert lines(log) == ["one"]
    resumed = await resume(stub, as_("orders-ops"), theirs.run_id)
    assert resumed.status == RUN.RUN_STATUS_SUCCESS


async def test_admin_calls_on_another_tenants_run_look_like_calls_on_a_missing_run(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """`literal` may do everything (action *), but only in its tenants: delete, restart,
    time travel and resume of an orders/ run answer as for an id that does not exist, and
    the run stays as it was."""
    log = tmp_path / "log"
    theirs = await start(stub, as_("orders-ops"), "orders/1", log)
    unknown = new_id("nothing")
    one = message_pb2.StepPath(segments=["one"])
    calls = (
        lambda run_id: stub.DeleteRun(rr.DeleteRunRequest(run_id=run_id), metadata=as_("literal")),
        lambda run_id: stub.RestartRun(
            rr.RestartRunRequest(run_id=run_id), metadata=as_("literal")
        ),
        lambda run_id: stub.TimeTravelRun(
            rr.TimeTravelRunRequest(run_id=run_id, step=one), metadata=as_("literal")
        ),
        lambda run_id: resume(stub, as_("literal"), run_id),
    )
    for call in calls:
        hidden, missing = await call_error(call(theirs.run_id)), await call_error(call(unknown))
        assert_hidden(hidden, missing, theirs.run_id, unknown)
    hidden = await call_error(get(stub, as_("literal"), theirs.run_id))
    assert_refused(hidden, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    run = await get(stub, as_("orders-ops"), theirs.run_id)
    assert run.status == RUN.RUN_STATUS_SUSPENDED and run.result.version == theirs.version
    assert lines(log) == ["one"]


async def test_creating_a_run_with_another_tenants_run_id_is_permission_denied(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """CreateRun, like StartRun, with the id of an orders/ run: PERMISSION_DENIED, which
    tells nothing of that run (not RUN_ALREADY_EXISTS with its status)."""
    theirs = await start(stub, as_("orders-ops"), "orders/1", tmp_path / "log")
    started = await call_error(
        start(stub, as_("billing-ops"), "billing/1", tmp_path / "log", run_id=theirs.run_id)
    )
    assert_denied(started, "billing-ops", "start")
    create = stub.CreateRun(
        rr.CreateRunRequest(workflow_id="counted", run_id=theirs.run_id, resource_id="billing/1"),
        metadata=as_("billing-ops"),
        timeout=5,
    )
    created = await call_error(create)
    assert "status" not in created.metadata, created
    assert_denied(created, "billing-ops", "start")


async def test_reading_another_tenants_run_looks_like_a_missing_run(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """GetRun and WatchRun of an orders/ run by billing-ops answer exactly what they answer
    for an id that does not exist: NOT_FOUND, RUN_NOT_FOUND, the same message and metadata
    (with the id it was asked about)."""
    theirs = await start(stub, as_("orders-ops"), "orders/1", tmp_path / "log")
    unknown = new_id("nothing")

    def same(hidden: RichError, missing: RichError) -> None:
        assert_refused(hidden, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
        assert_refused(missing, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
        assert hidden.message.replace(theirs.run_id, "ID") == missing.message.replace(unknown, "ID")
        assert hidden.metadata == {**missing.metadata, "run_id": theirs.run_id}
        assert (hidden.violations, hidden.suspended) == (missing.violations, missing.suspended)

    for reader in ("billing-ops", "billing-reader"):
        same(
            await call_error(get(stub, as_(reader), theirs.run_id)),
            await call_error(get(stub, as_(reader), unknown)),
        )
        same(
            await watch_error(stub, as_(reader), theirs.run_id),
            await watch_error(stub, as_(reader), unknown),
        )
    assert (await get(stub, as_("orders-ops"), theirs.run_id)).resource_id == "orders/1"


async def test_list_runs_shows_only_the_callers_tenants(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Every page of ListRuns, with or without a resource filter, holds only runs of the
    caller's tenants; the filters cannot widen that."""
    log = tmp_path / "log"
    for resource in ("billing/1", "billing/2"):
        await start(stub, as_("billing-ops"), resource, log)
    for resource in ("orders/1", "orders/2", "orders/3"):
        await start(stub, as_("orders-ops"), resource, log)

    assert await listed(stub, as_("billing-ops")) == ["billing/1", "billing/2"]
    assert await listed(stub, as_("billing-reader")) == ["billing/1", "billing/2"]
    assert await listed(stub, as_("orders-ops")) == ["orders/1", "orders/2", "orders/3"]
    assert await listed(stub, as_("billing-ops"), resource_id="orders/1") == []
    assert await listed(stub, as_("billing-ops"), resource_id="billing/2") == ["billing/2"]
    assert await listed(stub, as_("billing-ops"), workflow_id="counted") == [
        "billing/1",
        "billing/2",
    ]
    assert len(await listed(stub, as_("root"))) == 5


async def test_list_runs_matches_tenant_prefixes_case_sensitively(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Tenant `billing/` owns `billing/1`, not `BILLING/1` or `Billing/2` (GetRun already
    says so: NOT_FOUND); ListRuns must agree and not show them."""
    log = tmp_path / "log"
    await start(stub, as_("billing-ops"), "billing/1", log)
    others = [await start(stub, as_("root"), r, log) for r in ("BILLING/1", "Billing/2")]
    for other in others:
        hidden = await call_error(get(stub, as_("billing-ops"), other.run_id))
        assert hidden.code == grpc.StatusCode.NOT_FOUND
    assert await listed(stub, as_("billing-ops")) == ["billing/1"]


async def test_tenant_prefixes_with_like_wildcards_are_taken_literally(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """Tenants `a%b/` and `c_d/`: `%` and `_` are characters, not LIKE wildcards; a tenant
    with quotes is data too."""
    log = tmp_path / "log"
    resources = ["a%b/1", "aXb/1", "ab/1", "a%%b/1", "c_d/1", "cXd/1", "c%d/1", "c\\d/1"]
    resources += [f"{QUOTED_TENANT}1", "q/1"]
    for resource in resources:
        await start(stub, as_("root"), resource, log)
    assert await listed(stub, as_("literal")) == ["a%b/1", "c_d/1"]
    assert await listed(stub, as_("quoted")) == [f"{QUOTED_TENANT}1"]
    assert len(await listed(stub, as_("root"))) == len(resources)


async def test_a_wildcard_token_can_do_everything(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """root (every tenant, action *): start anywhere, read, watch, resume, cancel, list every
    tenant's runs, and the admin calls (restart, time travel, delete)."""
    log = tmp_path / "log"
    root = as_("root")
    billing = await start(stub, root, "billing/1", log)
    orders = await start(stub, root, "orders/1", log)
    loose = await start(stub, root, "", log)
    assert await listed(stub, root) == ["", "billing/1", "orders/1"]
    assert (await get(stub, root, orders.run_id)).status == RUN.RUN_STATUS_SUSPENDED

    resumed = await resume(stub, root, billing.run_id, 3)
    assert resumed.status == RUN.RUN_STATUS_SUCCESS
    assert resumed.steps["gate"].resumed_by == "root"
    events = await watch(stub, root, billing.run_id)
    assert events[-1].type == EV.RUN_EVENT_TYPE_RUN_SETTLED
    canceled = await stub.CancelRun(
        rr.CancelRunRequest(run_id=orders.run_id), metadata=root, timeout=5
    )
    assert canceled.status == RUN.RUN_STATUS_CANCELED

    travel = await stub.TimeTravelRun(
        rr.TimeTravelRunRequest(run_id=billing.run_id, step=message_pb2.StepPath(segments=["one"])),
        metadata=root,
        timeout=20,
    )
    assert travel.status == RUN.RUN_STATUS_SUSPENDED
    restart = await call_error(
        stub.RestartRun(rr.RestartRunRequest(run_id=billing.run_id), metadata=root, timeout=5)
    )
    assert_refused(restart, grpc.StatusCode.FAILED_PRECONDITION, "RUN_NOT_ACTIVE")
    await stub.DeleteRun(rr.DeleteRunRequest(run_id=loose.run_id), metadata=root, timeout=5)
    gone = await call_error(get(stub, root, loose.run_id))
    assert gone.code == grpc.StatusCode.NOT_FOUND


async def test_a_start_request_id_does_not_reveal_another_tenants_run(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A StartRun whose request_id another tenant already used must not answer with that
    tenant's run (its id, resource, steps and payloads): billing-ops gets a run of its own
    or a refusal, never orders/1."""
    log = tmp_path / "log"
    request_id = new_id("req")
    theirs = await start(stub, as_("orders-ops"), "orders/1", log, request_id=request_id)
    try:
        mine = await start(stub, as_("billing-ops"), "billing/1", log, request_id=request_id)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() != grpc.StatusCode.OK
    else:
        assert mine.run_id != theirs.run_id, "billing-ops was answered with orders/1's run"
        assert (await get(stub, as_("billing-ops"), mine.run_id)).resource_id == "billing/1"


async def test_a_pending_run_starts_under_its_own_resource(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """A tenant starts its own PENDING run without repeating its resource_id (it was
    PERMISSION_DENIED "on resource ''"); a resource_id that is not the run's is
    INVALID_ARGUMENT, and the run stays PENDING. It was ignored: a credential of several
    tenants could record a request id under one resource for a run of another, and a
    caller of the first then got that run back from a retry."""
    log = tmp_path / "log"
    for name, resource in (("billing-ops", "billing/own"), ("root", "orders/secret")):
        created = await stub.CreateRun(
            rr.CreateRunRequest(workflow_id="counted", resource_id=resource),
            metadata=as_(name),
            timeout=5,
        )
        error = await call_error(
            start(stub, as_(name), "billing/x", log, run_id=created.run_id, request_id="k")
        )
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert resource in error.violations["resource_id"]
        assert (await get(stub, as_(name), created.run_id)).status == RUN.RUN_STATUS_PENDING
        started = await start(stub, as_(name), "", log, run_id=created.run_id)
        assert started.status == RUN.RUN_STATUS_SUSPENDED
        assert (await get(stub, as_(name), created.run_id)).resource_id == resource


async def test_a_pending_runs_start_is_kept_under_the_runs_own_resource(
    stub: WorkflowServiceStub, tmp_path: Path
) -> None:
    """StartRun of a PENDING run without resource_id keeps its request id under the run's
    resource: another tenant's start of its own PENDING run with the same request id
    starts that run (it was answered the first tenant's run, input and payloads: the key
    was kept under resource ''), a retry naming the run's resource replays the first
    outcome (it was ALREADY_EXISTS), and a run made without a resource keeps none."""
    log = tmp_path / "log"

    async def pending(name: str, resource: str) -> str:
        made = await stub.CreateRun(
            rr.CreateRunRequest(workflow_id="counted", resource_id=resource),
            metadata=as_(name),
            timeout=5,
        )
        return made.run_id

    theirs = await pending("orders-ops", "orders/secret")
    mine = await pending("billing-ops", "billing/a")
    first = await start(stub, as_("orders-ops"), "", log, run_id=theirs, request_id="same")
    assert first.run_id == theirs
    started = await start(stub, as_("billing-ops"), "", log, run_id=mine, request_id="same")
    assert (started.run_id, started.status) == (mine, RUN.RUN_STATUS_SUSPENDED)
    retried = await start(
        stub, as_("billing-ops"), "billing/a", log, run_id=mine, request_id="same"
    )
    assert (retried.run_id, retried.version) == (mine, started.version)
    bare = await pending("root", "")
    error = await call_error(start(stub, as_("root"), "billing/x", log, run_id=bare))
    assert (error.code, list(error.violations)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["resource_id"],
    )
    assert (await get(stub, as_("root"), bare)).resource_id == ""


async def test_a_create_request_id_does_not_reveal_another_tenants_run(
    stub: WorkflowServiceStub,
) -> None:
    """The same for CreateRun: billing-ops never gets orders/2's run back."""
    request_id = new_id("req")
    theirs = await stub.CreateRun(
        rr.CreateRunRequest(workflow_id="counted", resource_id="orders/2", request_id=request_id),
        metadata=as_("orders-ops"),
        timeout=5,
    )
    try:
        made = await stub.CreateRun(
            rr.CreateRunRequest(
                workflow_id="counted", resource_id="billing/2", request_id=request_id
            ),
            metadata=as_("billing-ops"),
            timeout=5,
        )
    except grpc.aio.AioRpcError as exc:
        assert exc.code() != grpc.StatusCode.OK
    else:
        assert made.run_id != theirs.run_id, "billing-ops was answered with orders/2's run"
        assert made.resource_id == "billing/2"


# -- who resumed ----------------------------------------------------------------------------


async def test_the_step_records_who_resumed_it(stub: WorkflowServiceStub, tmp_path: Path) -> None:
    """After a resume with billing-ops's token, steps["gate"].resumed_by is "billing-ops" in
    the answer, in GetRun (also for another reader of the tenant) and in the STEP_RESUMED
    event; steps that were not resumed have none."""
    started = await start(stub, as_("billing-ops"), "billing/1", tmp_path / "log")
    assert started.steps["gate"].resumed_by == ""
    resumed = await resume(stub, as_("billing-ops"), started.run_id, 9)
    assert resumed.steps["gate"].resumed_by == "billing-ops"
    run = await get(stub, as_("billing-reader"), started.run_id)
    assert run.result.steps["gate"].resumed_by == "billing-ops"
    assert run.result.steps["one"].resumed_by == ""
    assert to_json(run.result.result) == {"value": 10}
    events = await watch(stub, as_("billing-reader"), started.run_id)
    resumes = [e for e in events if e.type == EV.RUN_EVENT_TYPE_STEP_RESUMED]
    assert [e.step_result.resumed_by for e in resumes] == ["billing-ops"]


async def test_without_a_policy_a_resume_is_recorded_as_anonymous(
    db_path: Path, tmp_path: Path
) -> None:
    running = await create_server(settings_for(db_path))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            plain = WorkflowServiceStub(channel)
            started = await start(plain, (), "", tmp_path / "log")
            resumed = await resume(plain, (), started.run_id)
            assert resumed.steps["gate"].resumed_by == "anonymous"
    finally:
        await running.stop(grace=1.0)


# -- secrets stay out of logs and spans -----------------------------------------------------


async def _exercise(stub: WorkflowServiceStub, log: Path) -> None:
    """Calls with every kind of credential outcome: allowed, denied, hidden, unknown and
    malformed tokens, and an unexpected argument error."""
    started = await start(stub, as_("billing-ops"), "billing/1", log)
    await get(stub, as_("billing-ops"), started.run_id)
    await resume(stub, as_("billing-ops"), started.run_id)
    await watch(stub, as_("billing-reader"), started.run_id)
    await stub.ListRuns(rr.ListRunsRequest(), metadata=as_("billing-ops"), timeout=5)
    theirs = await start(stub, as_("orders-ops"), "orders/1", log)
    await call_error(get(stub, as_("billing-ops"), theirs.run_id))
    await call_error(resume(stub, as_("billing-ops"), theirs.run_id))
    await call_error(start(stub, as_("billing-reader"), "billing/2", log))
    await call_error(get(stub, bearer(WRONG_TOKEN), started.run_id))
    await call_error(get(stub, (("authorization", f"Basic {WRONG_TOKEN}"),), started.run_id))
    await call_error(get(stub, (("authorization", WRONG_TOKEN),), started.run_id))
    await call_error(resume(stub, as_("root"), theirs.run_id, retry_count=-1))


def _secrets() -> dict[str, str]:
    """Every token and its hash, by a label for the failure message."""
    out = {f"token {n}": t for n, t in TOKENS.items()}
    out["wrong token"] = WRONG_TOKEN
    out.update({f"sha256 of {n}": hashlib.sha256(t.encode()).hexdigest() for n, t in out.items()})
    return out


def _leaks(text: str) -> list[str]:
    return [label for label, secret in _secrets().items() if secret in text]


async def test_tokens_never_appear_in_logs_or_spans(
    db_path: Path, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Log records at DEBUG (message, arguments, exception text) and every span (name,
    attributes, events, links, status) of calls made with tokens hold no token and no
    token hash."""
    caplog.set_level(logging.DEBUG)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    async with (
        serving(
            db_path, pki, tracer_provider=tracer_provider, meter_provider=meter_provider
        ) as running,
        connect(running.port, trust=pki.ca.cert_pem) as client,
    ):
        await _exercise(client, tmp_path / "log")
    finished = spans.get_finished_spans()
    assert len(finished) > 10, "the calls made no spans: nothing was checked"
    assert any(span.name.endswith("/GetRun") for span in finished)
    for span in finished:
        assert not _leaks(span.to_json()), (_leaks(span.to_json()), span.to_json())
    assert caplog.records, "nothing was logged: nothing was checked"
    for record in caplog.records:
        text = " ".join(
            [record.getMessage(), repr(record.args), record.exc_text or "", str(record.__dict__)]
        )
        assert not _leaks(text), (_leaks(text), text)
    assert not _leaks(caplog.text)


async def test_the_credential_is_named_on_the_span_and_refusals_in_the_log(
    db_path: Path, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit trail: every call's server span carries its credential's name
    (`enduser.id`); a refused call is logged at INFO with the name (or, unauthenticated,
    the peer) and the reason."""
    caplog.set_level(logging.INFO, logger="waystation.transport.servicer")
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    log = tmp_path / "log"
    async with (
        serving(db_path, pki, tracer_provider=tracer_provider) as running,
        connect(running.port, trust=pki.ca.cert_pem) as stub,
    ):
        mine = await start(stub, as_("billing-ops"), "billing/1", log)
        await get(stub, as_("billing-reader"), mine.run_id)
        await call_error(start(stub, as_("billing-reader"), "billing/2", log))
        await call_error(get(stub, bearer(WRONG_TOKEN), mine.run_id))
    named = {
        (span.name.rsplit("/", 1)[-1], (span.attributes or {}).get("enduser.id"))
        for span in spans.get_finished_spans()
        if span.name.startswith("/waystation.v1.WorkflowService/")
    }
    assert {("StartRun", "billing-ops"), ("GetRun", "billing-reader")} <= named
    assert ("StartRun", "billing-reader") in named  # refused, and named all the same
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert any("to billing-reader: PERMISSION_DENIED" in m for m in refusals), refusals
    assert any("unknown bearer token" in m for m in refusals), refusals


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], 'one field, "credentials"'),
        ({"credentials": {"name": "x"}}, '"credentials" is a list'),
        ({"credentials": [], "extra": 1}, 'one field, "credentials"'),
        ({"credentials": ["x"]}, "credentials[0] is not an object"),
        ({"credentials": [{"token_sha256": "ab"}]}, "needs a name"),
        (
            {"credentials": [{"name": "a", "token_sha256": "ab", "tenants": "team-a/"}]},
            "tenants is a list of text",
        ),
        (
            {"credentials": [{"name": "a", "token_sha256": "ab", "tenant": ["team-a/"]}]},
            "unknown field 'tenant'",
        ),
        (
            {"credentials": [{"name": "a", "token_sha256": "ab", "tenants": None}]},
            "tenants is a list of text",
        ),
        (
            {"credentials": [{"name": "a", "token_sha256": "ab", "tenants": [1]}]},
            "tenants is a list of text",
        ),
        (
            {"credentials": [{"name": "a", "token_sha256": "ab", "actions": [["read"]]}]},
            "actions is a list of text",
        ),
        ({"credentials": [{"name": "a", "token_sha256": 5}]}, "token_sha256 is the SHA-256"),
        ({"credentials": [{"name": "a", "token_sha256": "s3cret"}]}, "not the token itself"),
        (
            {"credentials": [{"name": "a", "token_sha256": DIGEST, "tenants": []}]},
            "tenants is empty",
        ),
        (
            {"credentials": [{"name": "a", "token_sha256": DIGEST, "actions": []}]},
            "actions is empty",
        ),
        (
            {
                "credentials": [
                    {"name": "narrow", "token_sha256": DIGEST, "tenants": ["a/"]},
                    {"name": "wide", "token_sha256": DIGEST.upper()},
                ]
            },
            "'narrow' and 'wide' have the same token_sha256",
        ),
        (
            {
                "credentials": [
                    {"name": "one", "mtls_identity": "svc.internal", "tenants": ["a/"]},
                    {"name": "two", "mtls_identity": "svc.internal"},
                ]
            },
            "'one' and 'two' have the same mtls_identity",
        ),
        (
            {
                "credentials": [
                    {"name": "same", "mtls_identity": "one.internal"},
                    {"name": "same", "mtls_identity": "two.internal"},
                ]
            },
            "two credentials are named 'same'",
        ),
    ],
    ids=[
        "a-list",
        "credentials-an-object",
        "an-unknown-top-level-field",
        "a-credential-not-an-object",
        "no-name",
        "tenants-a-string",
        "tenants-misspelt",
        "tenants-null",
        "a-tenant-not-text",
        "actions-nested",
        "a-token-hash-not-text",
        "a-token-hash-that-is-the-token",
        "no-tenants",
        "no-actions",
        "one-token-twice",
        "one-identity-twice",
        "one-name-twice",
    ],
)
def test_a_policy_that_is_not_exactly_as_documented_stops_the_server(
    tmp_path: Path, document: Any, problem: str
) -> None:
    """A typo must not widen a credential (a string of tenants was taken as one-letter
    prefixes, a misspelt `tenants` as every tenant) nor fail later, call by call: the
    policy is refused at start-up, with the file and the problem named."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError) as refused:
        AuthPolicy.from_file(str(path))
    assert str(path) in str(refused.value)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"credentials": [], "credentials": [{"name": "a"}]}', "'credentials' is given twice"),
        (
            f'{{"credentials": [{{"name": "a", "token_sha256": "{DIGEST}", "tenants": ["a/"],'
            ' "tenants": [""]}]}',
            "'tenants' is given twice",
        ),
        (None, "No such file"),
    ],
    ids=["credentials-twice", "tenants-twice", "no-file"],
)
def test_a_policy_file_that_json_would_read_leniently_stops_the_server(
    tmp_path: Path, text: str | None, problem: str
) -> None:
    """A key given twice in one object is refused (json keeps the last one: a second
    `tenants` could widen a credential), and a missing file is named with the option."""
    path = tmp_path / "policy.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError) as refused:
        AuthPolicy.from_file(str(path))
    assert str(refused.value).startswith(f"--auth-config {path}: ")
    assert problem in str(refused.value)


def test_tokens_never_appear_in_a_server_process_output(pki: Pki, tmp_path: Path) -> None:
    """`waystation serve --auth-config ... --log-level debug` with the console span exporter:
    everything the process prints (log lines and spans) holds no token and no token hash."""
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}
    args = ["--auth-config", str(pki.policy), "--log-level", "debug"]
    with ServerProcess(
        tmp_path / "secrets.db", workflows=["tests.support.workflows"], extra_args=args, env=env
    ) as server:

        async def calls() -> None:
            async with grpc.aio.insecure_channel(server.address) as channel:
                await _exercise(WorkflowServiceStub(channel), tmp_path / "log")

        asyncio.run(calls())
        assert server.stop() == 0
        output = server.log
    assert any(s["name"].endswith("/ResumeRun") for s in console_spans(output)), output[-3000:]
    assert " DEBUG " in output, "the server logged nothing at DEBUG: nothing was checked"
    assert not _leaks(output), _leaks(output)


def assert_malformed_run_id(error: RichError) -> None:
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.violations == {"run_id": "must be 1-200 characters of A-Z a-z 0-9 . _ : -"}


# -- SQL ------------------------------------------------------------------------------------


async def test_ids_and_filters_reach_sql_only_as_bound_values(
    tls_server: RunningServer, stub: WorkflowServiceStub, db_path: Path, tmp_path: Path
) -> None:
    """Ids, filters and page tokens shaped like SQL injections are plain data: a run id
    that no run can have is INVALID_ARGUMENT before any lookup, an unknown workflow id
    NOT_FOUND, a resource id is stored as written; the tables are intact and later calls
    work."""
    log = tmp_path / "log"
    root = as_("root")
    before = await start(stub, root, "billing/1", log)

    for call in (
        get(stub, root, INJECTION),
        resume(stub, root, INJECTION),
        stub.CancelRun(rr.CancelRunRequest(run_id=INJECTION), metadata=root, timeout=5),
        stub.DeleteRun(rr.DeleteRunRequest(run_id=INJECTION), metadata=root, timeout=5),
        stub.RestartRun(rr.RestartRunRequest(run_id=INJECTION), metadata=root, timeout=5),
    ):
        assert_malformed_run_id(await call_error(call))
    assert_malformed_run_id(await watch_error(stub, root, INJECTION))
    # the same for a scoped credential, whose tenants are checked against the run
    assert_malformed_run_id(await call_error(get(stub, as_("billing-ops"), INJECTION)))
    assert_malformed_run_id(await call_error(start(stub, root, "billing/2", log, run_id=INJECTION)))
    unknown = stub.StartRun(
        rr.StartRunRequest(workflow_id=INJECTION, resource_id="billing/2"), metadata=root
    )
    assert_refused(await call_error(unknown), grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND")
    assert_malformed_run_id(await call_error(resume(stub, root, INJECTION, request_id=INJECTION)))
    page = stub.ListRuns(rr.ListRunsRequest(page_token=INJECTION), metadata=root, timeout=5)
    assert (await call_error(page)).code == grpc.StatusCode.INVALID_ARGUMENT

    stored = await start(stub, root, INJECTION, log, request_id=INJECTION)
    assert (await get(stub, root, stored.run_id)).resource_id == INJECTION
    assert await listed(stub, root, resource_id=INJECTION) == [INJECTION]
    assert await listed(stub, root, workflow_id=INJECTION) == []
    assert await listed(stub, root, resource_id="' OR '1'='1") == []

    with sqlite3.connect(db_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"runs"} <= tables
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    later = await resume(stub, root, before.run_id)
    assert later.status == RUN.RUN_STATUS_SUCCESS
    assert await listed(stub, root) == sorted(["billing/1", INJECTION])
