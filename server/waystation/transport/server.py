"""Building and running the gRPC server: `create_server` apart from `serve`.

`create_server` wires the servicer, the standard health service and server reflection into
a grpc.aio server bound to an address (port 0 in tests). `serve` adds the process concerns:
logging, the store, recovery of interrupted runs, and a graceful drain on SIGTERM / SIGINT / SIGHUP
(stop taking calls, let calls in flight finish within the grace period, close the store).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2
from opentelemetry import metrics
from opentelemetry.sdk.trace import TracerProvider

from waystation.api.v1 import service_pb2
from waystation.connection import check_address, check_pem
from waystation.engine import Engine, Telemetry, load_workflows
from waystation.storage import SnapshotStore, StoreError, open_store
from waystation.telemetry import Providers, configure_logging, providers_from_env
from waystation.transport import reflection
from waystation.transport.auth import AuthPolicy
from waystation.transport.registration import add_checked, add_service
from waystation.transport.servicer import WorkflowService
from waystation.transport.spans import ServerSpans

log = logging.getLogger("waystation")

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name


@dataclass
class ServerSettings:
    listen: str = "127.0.0.1:50051"
    db: str = "sqlite:///waystation.db"
    workflows: list[str] = field(default_factory=lambda: ["waystation.examples"])
    log_level: str = "info"
    max_message_bytes: int = 4 * 1024 * 1024
    grace_seconds: float = 10.0
    max_pending_calls: int = 10_000
    """Calls received but not yet taken up that gRPC keeps waiting: past it, it cancels
    a growing share of new calls, and every one past twice it (`backlog_options`)."""
    recovery: str = "continue"
    lease_seconds: float = 15.0
    migrate: bool = True
    tls_cert: str = ""
    """PEM certificate chain of the server; with `tls_key`, the port serves TLS only."""
    tls_key: str = ""
    tls_client_ca: str = ""
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    auth_config: str = ""
    """JSON policy of credentials, tenants and actions (see transport/auth.py); off if empty."""


KEEPALIVE = [
    # Clients and meshes may ping every 5 s, also with no call in flight: a watch of a
    # suspended run sends nothing for days, and gRPC's default (a ping at most every
    # 5 minutes without data) answered a 10-60 s keepalive with GOAWAY too_many_pings,
    # ending the watch and any call in flight.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # The server pings a quiet connection every minute and drops it after 20 s without
    # an answer: a client that vanished (no FIN through a proxy) does not hold a watch.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]
"""HTTP/2 keepalive policy (docs/deployment.md, "Connections")."""


def backlog_options(pending: int) -> list[tuple[str, int]]:
    """A backlog of `pending` calls before gRPC starts cancelling new ones. Under load calls
    wait in gRPC's core until grpc.aio takes them up (one per turn of the event loop); past
    its default of 1,000 it cancelled them with a bare CANCELLED, which clients do not
    retry (43 % of a burst of 5,000 StartRuns, none of them started)."""
    return [
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", 2 * pending),
    ]


class _Health(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """The standard health service, with `List` (grpcio's asyncio servicer leaves it
    UNIMPLEMENTED, with an error logged for each call, though reflection advertises it)."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._draining = False
        self._store_reachable = True
        self._following: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Event | None = None
        """Set (and replaced) whenever a status changes: what watchers wait on."""

    async def set(self, service: str, status: int) -> None:
        if not self._draining:  # as the servicer: a drain's NOT_SERVING is for good
            self._statuses[service] = status
            self._wake()
        await super().set(service, status)

    def follow_store(self, reachable: bool) -> None:
        """Every status NOT_SERVING while the store refuses the engine's writes (a replica
        cut off from its database, a full disk, a lock held too long), SERVING again once
        it takes them: a load balancer or a readiness probe then sends calls to replicas
        that can act on them. A drain's NOT_SERVING stays."""
        if reachable == self._store_reachable or self._draining:
            return
        self._store_reachable = reachable
        if reachable:
            log.info("the store takes writes again: health SERVING")
        else:
            log.warning("the store refuses writes: health NOT_SERVING until it takes them")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if reachable
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in list(self._statuses):
            task = asyncio.get_running_loop().create_task(self.set(service, status))
            self._following.add(task)
            task.add_done_callback(self._following.discard)

    async def enter_graceful_shutdown(self) -> None:
        self._draining = True
        self._statuses = dict.fromkeys(self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._wake()
        await super().enter_graceful_shutdown()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def Watch(self, request: Any, context: Any) -> None:
        """As grpcio's servicer streams it, but a drain ends the stream once it has sent
        NOT_SERVING (UNAVAILABLE, as a drain ends a WatchRun): client-side health checking
        keeps a Watch open on every server, and an open one held each drain for its whole
        grace."""
        sent = None
        while True:
            status = self._statuses.get(
                request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            )
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if self._draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is draining")
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    async def List(self, request: Any, context: Any) -> Any:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._statuses.items()
            }
        )


@dataclass
class RunningServer:
    """A started server: its bound port, and how to stop it."""

    server: grpc.aio.Server
    port: int
    engine: Engine
    store: SnapshotStore
    health: Any  # grpc_health.v1.health.aio.HealthServicer (not in the type stubs)
    providers: Providers | None = None

    async def stop(self, grace: float) -> None:
        """Stop taking calls, let calls in flight finish, stop executions, close the store."""
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.sleep(0)  # new calls are refused from here on
        self.engine.drain()
        await stopping
        await self.engine.close(grace=0)
        await self.store.close()
        if self.providers is not None:
            self.providers.shutdown()


async def create_server(
    settings: ServerSettings,
    tracer_provider: TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    store: SnapshotStore | None = None,
) -> RunningServer:
    """Open the store (`store`, or the one `settings.db` names), recover interrupted runs,
    and start serving on `settings.listen`. Spans and metrics go to the given providers,
    or to ones made from the `OTEL_*` variables (owned, and shut down, by the server)."""
    if settings.recovery not in ("continue", "fail"):
        raise ValueError(f"recovery must be 'continue' or 'fail', not {settings.recovery!r}")
    workflows = load_workflows(settings.workflows)  # before anything is opened
    if not workflows:
        log.warning("no committed workflow in %s", ", ".join(settings.workflows))
    policy = AuthPolicy.from_file(settings.auth_config) if settings.auth_config else None
    providers = None
    if tracer_provider is None or meter_provider is None:
        providers = providers_from_env()
        tracer_provider = tracer_provider or providers.tracer_provider
        meter_provider = meter_provider or providers.meter_provider
    store = store or open_store(settings.db, migrate=settings.migrate)
    limit = settings.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Fail on a port another process serves, instead of sharing its calls.
            ("grpc.so_reuseport", 0),
            *KEEPALIVE,
            *backlog_options(settings.max_pending_calls),
        ],
    )
    try:
        await store.setup()
        engine = Engine(
            store,
            workflows,
            recovery="fail" if settings.recovery == "fail" else "continue",
            telemetry=Telemetry(tracer_provider, meter_provider),
            lease_seconds=settings.lease_seconds,
        )
        service = WorkflowService(engine, policy, max_message_bytes=limit)
        add_service(service, server, ServerSpans(tracer_provider, SERVICE_NAME))
        health_servicer = _Health()
        health_service = health_pb2.DESCRIPTOR.services_by_name["Health"]
        add_checked(health_servicer, health_service, server, own_queue=True)
        reflection.enable([SERVICE_NAME, health.SERVICE_NAME], server)
        port = _bind(server, settings)
        # Recover before serving, so no call sees a run that is about to be continued.
        recovered = await engine.start()
        await server.start()
    except BaseException:
        # Nothing may keep a process that cannot serve alive (the store's threads would).
        await server.stop(None)
        await store.close()
        if providers is not None:
            providers.shutdown()
        raise
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    engine.on_store_health = health_servicer.follow_store
    log.info(
        "serving on %s (port %d), %d workflows, %d runs recovered",
        settings.listen,
        port,
        len(engine.workflows()),
        recovered,
    )
    return RunningServer(server, port, engine, store, health_servicer, providers)


def _bind(server: grpc.aio.Server, settings: ServerSettings) -> int:
    """Listen with TLS (mutual when a client CA is given) or in plain text; OSError if the
    address cannot be listened on."""
    try:
        check_address(settings.listen, "--listen")
    except ValueError as exc:
        raise OSError(f"cannot listen: {exc}") from None
    try:
        port = _add_port(server, settings)
    except RuntimeError as exc:  # grpc's way to say it could not bind
        why = _why_not(settings.listen) or str(exc)
        raise OSError(f"cannot listen on {settings.listen}: {why}") from None
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    return port


def _why_not(listen: str) -> str:
    """Why the system refuses to listen on `listen` (grpc's own error only says that it
    failed), found by binding a socket there; "" if it can."""
    host, _, port = listen.rpartition(":")
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
        family, kind, proto, _, address = found[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc)
    return ""


def _add_port(server: grpc.aio.Server, settings: ServerSettings) -> int:
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
        return server.add_insecure_port(settings.listen)
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("TLS needs both a certificate and a key")
    check_pem(
        ("--tls-cert", settings.tls_cert),
        ("--tls-key", settings.tls_key),
        ("--tls-client-ca", settings.tls_client_ca),
    )
    ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    credentials = grpc.ssl_server_credentials(
        [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
    return server.add_secure_port(settings.listen, credentials)


class CannotStart(Exception):
    """The server cannot start for a reason its operator can fix (one line says which)."""


async def serve(settings: ServerSettings) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP, then drain gracefully."""
    configure_logging(settings.log_level)
    try:
        running = await create_server(settings)
    except ModuleNotFoundError as exc:  # a workflows module, or its package (the rest is wrapped)
        raise CannotStart(
            f"no module named {exc.name!r} (workflow modules are imported from the current"
            " directory and PYTHONPATH)"
        ) from exc
    except (OSError, ValueError, StoreError) as exc:
        raise CannotStart(str(exc)) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too (a closed terminal; a reload, which settings read at start-up cannot
    # have): drained, not killed with calls in flight.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining: up to %.1fs for calls in flight", settings.grace_seconds)
    await running.stop(settings.grace_seconds)
    log.info("stopped")
