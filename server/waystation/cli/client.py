"""The connection to a server: global options, one channel per command, errors to exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message

from waystation.api.v1 import service_pb2_grpc
from waystation.cli.errors import exit_code, report_rpc_error
from waystation.connection import Credentials, open_channel

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class ClientOptions:
    """The global options of the client commands (`waystation --server ... runs ...`)."""

    server: str = "127.0.0.1:50051"
    timeout: float = 30.0
    as_json: bool = False
    credentials: Credentials = field(default_factory=Credentials)


def global_options_note(group: str) -> str:
    """The epilog of a client command's help: where the root's options go."""
    return (
        f"The global options (--server, --json, --tls-ca, --token, ...) go before `{group}`, e.g."
        f" `waystation --json {group} ...`, or after the command; `waystation --help` lists them."
    )


def options(ctx: typer.Context) -> ClientOptions:
    """The global options stored by the root callback (defaults when run without it)."""
    found = ctx.find_object(ClientOptions)
    return found if found is not None else ClientOptions()


@contextmanager
def connect(
    opts: ClientOptions, deadline_hint: str = ""
) -> Iterator[service_pb2_grpc.WorkflowServiceStub]:
    """A stub on a fresh channel; a failed call prints its status (and `deadline_hint` when
    it ran out of time) and exits with its code."""
    try:
        with open_channel(opts.server, opts.credentials) as channel:
            yield service_pb2_grpc.WorkflowServiceStub(channel)
    except grpc.RpcError as err:
        if not isinstance(err, grpc.Call):
            raise
        report_rpc_error(err, deadline_hint)
        raise typer.Exit(code=exit_code(err)) from None


def emit(opts: ClientOptions, message: M, render: Callable[[M], None]) -> None:
    """Print a response: its proto3 JSON form with `--json`, otherwise for people."""
    if opts.as_json:
        sys.stdout.write(json_text(message) + "\n")
    else:
        render(message)


def json_text(message: Message, indent: int | None = 2) -> str:
    """`message`'s proto3 JSON form, with every field, also those at their default (an
    empty list is `[]`, not missing: scripts need no case for an empty answer)."""
    return json_format.MessageToJson(
        message, indent=indent, always_print_fields_with_no_presence=True
    )
