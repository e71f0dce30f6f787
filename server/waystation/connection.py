"""Client channels to a server, for the `waystation` client commands and the health check:
plain text, TLS, mutual TLS, and a bearer token sent with every call.

Both read the same environment variables:

    WAYSTATION_TLS_CA           CA certificate (PEM) the server's certificate must chain to;
                                enables TLS
    WAYSTATION_TLS_CLIENT_CERT  client certificate (PEM), for a server that requires one
    WAYSTATION_TLS_CLIENT_KEY   the client certificate's private key (PEM)
    WAYSTATION_TLS_SERVER_NAME  the name to check the server's certificate against, when the
                                address does not carry it (127.0.0.1 inside a container)
    WAYSTATION_TOKEN            bearer token, sent as `authorization: Bearer <token>`

The client certificate's variables are not `WAYSTATION_TLS_CERT` / `_KEY`: those name the
certificate `waystation serve` presents, and a client reading them would present the
server's certificate as its own.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ENV_TLS_CA = "WAYSTATION_TLS_CA"
ENV_TLS_CERT = "WAYSTATION_TLS_CLIENT_CERT"
ENV_TLS_KEY = "WAYSTATION_TLS_CLIENT_KEY"
ENV_TLS_SERVER_NAME = "WAYSTATION_TLS_SERVER_NAME"
ENV_TOKEN = "WAYSTATION_TOKEN"


class CredentialError(ValueError):
    """An option of `Credentials` that cannot work, named as its CLI option."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option, self.problem = option, problem


@dataclass(frozen=True)
class Credentials:
    """How to reach a server: TLS is on when a CA, a client certificate or a server name
    to check is given (without a CA, the system's trusted roots check the server). The
    token's surrounding whitespace (a file's last newline) is dropped."""

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""
    token: str = ""

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise CredentialError(
                "--tls-cert / --tls-key",
                "a client certificate needs both a certificate and its key",
            )
        token = self.token.strip()
        object.__setattr__(self, "token", token)
        if token and not (token.isascii() and token.isprintable() and " " not in token):
            # gRPC would refuse the header as "Invalid metadata", an INTERNAL error.
            raise CredentialError(
                "--token",
                "a bearer token is printable ASCII without spaces (it is sent in a header)",
            )

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_server_name)


def open_channel(address: str, credentials: Credentials) -> grpc.Channel:
    """A channel to `address` (host:port); OSError when a PEM file cannot be read."""
    options = []
    if credentials.tls_server_name:
        options.append(("grpc.ssl_target_name_override", credentials.tls_server_name))
    if credentials.tls:
        channel = grpc.secure_channel(address, _tls(credentials), options)
    else:
        channel = grpc.insecure_channel(address, options)
    if credentials.token:
        channel = grpc.intercept_channel(channel, _BearerToken(credentials.token))
    return channel


def _tls(credentials: Credentials) -> grpc.ChannelCredentials:
    def pem(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(
        root_certificates=pem(credentials.tls_ca),
        private_key=pem(credentials.tls_key),
        certificate_chain=pem(credentials.tls_cert),
    )


def check_pem(cert: tuple[str, str], key: tuple[str, str], ca: tuple[str, str]) -> None:
    """ValueError naming the option and the file, for a certificate, key or CA file (each
    `(option, path)`, the path "" when not given) that is missing, does not parse, or (for
    a key) does not belong to the certificate. grpc takes such files and fails later: a
    server "cannot listen", a client reports the server UNAVAILABLE, with C-core log lines."""
    for option, path in (cert, key, ca):
        if path and not Path(path).is_file():
            raise ValueError(f"{option} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cert[1] and key[1]:
        try:
            context.load_cert_chain(cert[1], key[1])
        except ssl.SSLError as exc:
            raise ValueError(
                f"{cert[0]} {cert[1]} / {key[0]} {key[1]}: not a PEM certificate and its"
                f" private key ({exc.reason or exc})"
            ) from None
    if ca[1]:
        try:
            context.load_verify_locations(cafile=ca[1])
        except ssl.SSLError as exc:
            raise ValueError(f"{ca[0]} {ca[1]}: no PEM certificate ({exc.reason or exc})") from None


def check_address(address: str, option: str) -> None:
    """ValueError unless `address` is HOST:PORT with a port of at most 65535 (grpc takes a
    port modulo 65536, and a missing one as 443). Other gRPC targets (`unix:...`,
    `dns:///...`) pass as they are."""
    if address.startswith("unix:") or "://" in address:
        return
    _, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or address.endswith("]"):
        raise ValueError(f"{option} {address!r}: needs a port, as HOST:PORT")
    if int(port) > 65535:
        raise ValueError(f"{option} {address!r}: port {port} is above 65535")


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """Adds `authorization: Bearer <token>` to every call. An interceptor rather than call
    credentials, which gRPC refuses on a plain-text channel (a server that takes tokens
    without TLS, behind a local proxy)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)
