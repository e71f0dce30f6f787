"""`waystation serve`: run the gRPC server until SIGTERM, SIGINT or SIGHUP.

Every option also reads a `WAYSTATION_*` environment variable. The transport is imported only
here, inside the command, so that the client commands work without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from enum import StrEnum
from typing import Annotated, Any

import typer


class LogLevel(StrEnum):
    """Python logging levels, in lower case."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class Recovery(StrEnum):
    """What a starting server does with runs that were running when a process died."""

    continue_ = "continue"
    fail = "fail"


def serve_command(
    listen: Annotated[
        str,
        typer.Option(
            envvar="WAYSTATION_LISTEN", metavar="HOST:PORT", help="host:port to listen on."
        ),
    ] = "127.0.0.1:50051",
    db: Annotated[
        str,
        typer.Option(
            envvar="WAYSTATION_DB",
            metavar="URL",
            help="sqlite:///relative.db, sqlite:////absolute.db or postgresql://...",
        ),
    ] = "sqlite:///waystation.db",
    workflows: Annotated[
        list[str] | None,
        typer.Option(
            envvar="WAYSTATION_WORKFLOWS",
            metavar="MODULE",
            help="Module whose workflows to serve (repeatable; the variable is comma-separated)."
            " Default: the shipped examples, waystation.examples.",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option(envvar="WAYSTATION_LOG_LEVEL", case_sensitive=False)
    ] = LogLevel.info,
    max_message_bytes: Annotated[
        int,
        typer.Option(
            envvar="WAYSTATION_MAX_MESSAGE_BYTES",
            metavar="BYTES",
            min=1,
            help="Largest gRPC message.",
        ),
    ] = 4 * 1024 * 1024,
    grace: Annotated[
        float,
        typer.Option(
            envvar="WAYSTATION_GRACE",
            metavar="SECONDS",
            min=0,
            help="Seconds to drain calls on shutdown.",
        ),
    ] = 10.0,
    max_pending_calls: Annotated[
        int,
        typer.Option(
            envvar="WAYSTATION_MAX_PENDING_CALLS",
            metavar="CALLS",
            min=1,
            help="Calls received but not yet started that may wait under load; past it gRPC"
            " cancels a growing share of new calls (CANCELLED: nothing was done), and all"
            " past twice it.",
        ),
    ] = 10_000,
    recovery: Annotated[
        Recovery,
        typer.Option(
            envvar="WAYSTATION_RECOVERY",
            case_sensitive=False,
            help="Runs interrupted by a crash: continue them, or mark them failed.",
        ),
    ] = Recovery.continue_,
    lease: Annotated[
        float,
        typer.Option(
            envvar="WAYSTATION_LEASE_SECONDS",
            metavar="SECONDS",
            min=0.5,
            help="Seconds a replica holds the runs it drives; other replicas take over a run"
            " whose lease expired (PostgreSQL).",
        ),
    ] = 15.0,
    migrate: Annotated[
        bool,
        typer.Option(
            envvar="WAYSTATION_MIGRATE",
            help="Apply missing database migrations at start-up (--no-migrate: only check"
            " the schema is current, for replicas without DDL rights).",
        ),
    ] = True,
    tls_cert: Annotated[
        str | None,
        typer.Option(
            envvar="WAYSTATION_TLS_CERT", metavar="FILE", help="Server certificate (PEM)."
        ),
    ] = None,
    tls_key: Annotated[
        str | None,
        typer.Option(envvar="WAYSTATION_TLS_KEY", metavar="FILE", help="Server private key (PEM)."),
    ] = None,
    tls_client_ca: Annotated[
        str | None,
        typer.Option(
            envvar="WAYSTATION_TLS_CLIENT_CA",
            metavar="FILE",
            help="CA bundle (PEM) for client certificates: enables mutual TLS.",
        ),
    ] = None,
    auth_config: Annotated[
        str | None,
        typer.Option(
            envvar="WAYSTATION_AUTH_CONFIG",
            metavar="FILE",
            help="JSON policy of credentials (bearer-token hashes, mTLS identities), their"
            " tenants and actions. Without it every caller may do everything.",
        ),
    ] = None,
) -> None:
    """Serve workflows over gRPC until SIGTERM, SIGINT or SIGHUP (then drain)."""
    from waystation.transport.server import CannotStart, ServerSettings, serve

    settings = ServerSettings(
        listen=listen,
        db=db,
        workflows=split_modules(workflows or []) or ["waystation.examples"],
        log_level=log_level.value,
        max_message_bytes=max_message_bytes,
        max_pending_calls=max_pending_calls,
        grace_seconds=grace,
        recovery=recovery.value,
        lease_seconds=lease,
        migrate=migrate,
        tls_cert=_file_option(tls_cert, "--tls-cert", "WAYSTATION_TLS_CERT", "TLS"),
        tls_key=_file_option(tls_key, "--tls-key", "WAYSTATION_TLS_KEY", "TLS"),
        tls_client_ca=_file_option(
            tls_client_ca, "--tls-client-ca", "WAYSTATION_TLS_CLIENT_CA", "mutual TLS"
        ),
        auth_config=_file_option(
            auth_config, "--auth-config", "WAYSTATION_AUTH_CONFIG", "authentication"
        ),
    )
    if os.getcwd() not in sys.path:  # as `python -m` would: the project's own modules
        sys.path.insert(0, os.getcwd())
    try:
        run_to_the_end(serve(settings))
    except CannotStart as exc:
        typer.echo(f"waystation serve: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


def run_to_the_end(main: Coroutine[Any, Any, None], wait: float = 1.0) -> None:
    """`asyncio.run(main)`, but a task that ignores its cancellation (a step that catches
    it and goes on, which the engine has left behind) gets `wait` seconds at the end, and
    then the process exits without it: asyncio.run waited for it for ever, and a task
    that also swallows the GeneratorExit of its destruction spins on at the interpreter's
    exit. By then the calls are answered and the store is closed."""
    loop = asyncio.new_event_loop()
    stuck: set[asyncio.Task[Any]] = set()
    served = False
    try:
        loop.run_until_complete(main)
        served = True
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                _, stuck = loop.run_until_complete(asyncio.wait(left, timeout=wait))
            if not stuck:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            if stuck:
                logging.shutdown()  # flushed: os._exit does not
                os._exit(0 if served else 1)
            loop.close()


def _file_option(value: str | None, option: str, envvar: str, turns_on: str) -> str:
    """The file an option names; a usage error if it was given empty (an unset variable
    in a manifest, say): the server served without `turns_on`, silently."""
    if value == "" or (value is None and os.environ.get(envvar) == ""):
        raise typer.BadParameter(
            f"is empty: name a file, or leave the option and {envvar} out to serve"
            f" without {turns_on}",
            param_hint=option,
        )
    return value or ""


def split_modules(values: list[str]) -> list[str]:
    """Module names from repeated options or a comma- or space-separated variable."""
    return [name for value in values for name in value.replace(",", " ").split()]
