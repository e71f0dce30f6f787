"""`python -m waystation.healthcheck [ADDRESS]`: exit 0 when the server answers SERVING.

For container HEALTHCHECKs and scripts; it asks the standard grpc.health.v1 service. A
server with TLS, mutual TLS or bearer tokens is reached with the options, or the
environment variables, of the `waystation` client commands (`waystation.connection`).
Any failure prints one line to stderr saying why, and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from waystation import connection
from waystation.connection import Credentials, open_channel

_SERVING = health_pb2.HealthCheckResponse.SERVING


def check(address: str, credentials: Credentials | None = None, timeout: float = 3.0) -> str:
    """Why the server at `address` is not healthy; "" when it answers SERVING."""
    try:
        with open_channel(address, credentials or Credentials()) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            reply = stub.Check(request, timeout=timeout)
    except OSError as err:
        return f"cannot read {err.filename}: {err.strerror}"
    except grpc.RpcError as err:
        return _failed(address, err)
    if reply.status != _SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"{address} is not serving ({status})"
    return ""


def _failed(address: str, err: grpc.RpcError) -> str:
    if not isinstance(err, grpc.Call):
        return f"{address} failed the health check: {err}"
    code, details = err.code(), " ".join((err.details() or "").split())
    unreachable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    what = "is unreachable" if unreachable else "failed the health check"
    return f"{address} {what}: {code.name}: {details}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Docker reserves exit code 2 of a HEALTHCHECK: every failure is 1, unhealthy.
        _fail(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m waystation.healthcheck",
        description="Exit 0 when the server answers SERVING; otherwise say why and exit 1.",
    )
    parser.add_argument(
        "address", nargs="?", default="127.0.0.1:50051", help="host:port (default: 127.0.0.1:50051)"
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, metavar="SECONDS", help="how long to wait (3)"
    )
    options = [
        ("--tls-ca", connection.ENV_TLS_CA, "FILE", "CA certificate (PEM); enables TLS"),
        ("--tls-cert", connection.ENV_TLS_CERT, "FILE", "client certificate (PEM)"),
        ("--tls-key", connection.ENV_TLS_KEY, "FILE", "the client certificate's key (PEM)"),
        ("--tls-server-name", connection.ENV_TLS_SERVER_NAME, "NAME", "the name to check"),
        ("--token", connection.ENV_TOKEN, "TOKEN", "bearer token"),
    ]
    for flag, variable, metavar, about in options:
        default = os.environ.get(variable, "")
        parser.add_argument(flag, default=default, metavar=metavar, help=f"{about}; ${variable}")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        credentials = Credentials(
            args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name, args.token
        )
    except ValueError as err:
        _fail(str(err))
    problem = check(args.address, credentials, args.timeout)
    if problem:
        _fail(problem)


def _fail(problem: str) -> NoReturn:
    print(f"healthcheck: {problem}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
