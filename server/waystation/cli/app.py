"""The root `waystation` command: global client options and the command groups."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from waystation import connection
from waystation.cli import argv, runs, workflows
from waystation.cli.client import ClientOptions
from waystation.cli.serve import serve_command

app = typer.Typer(
    name="waystation",
    help="Durable workflows over gRPC: serve them, start runs, resume suspended steps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # Plain help, as click prints it. Typer's rich help (0.29.2) shows a value placeholder
    # after every flag (`--json <bool>`, `--help <bool>`) and reads docstrings as console
    # markup, so `[i]` in a help text vanished.
    rich_markup_mode=None,
)
app.command("serve")(serve_command)
app.add_typer(workflows.app, name="workflows")
app.add_typer(runs.app, name="runs")


def _pem_file(variable: str, about: str) -> Any:
    """An option naming a PEM file (checked by the client commands); also read from
    `variable`."""
    return typer.Option(envvar=variable, metavar="FILE", help=about)


@app.callback()
def client_options(
    ctx: typer.Context,
    server: Annotated[
        str,
        typer.Option(
            envvar="WAYSTATION_SERVER", metavar="HOST:PORT", help="The server's host:port."
        ),
    ] = "127.0.0.1:50051",
    timeout: Annotated[
        float,
        typer.Option(
            min=0.001, metavar="SECONDS", help="Seconds each call may take (its gRPC deadline)."
        ),
    ] = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print responses as proto3 JSON instead of tables.")
    ] = False,
    tls_ca: Annotated[
        Path | None,
        _pem_file(
            connection.ENV_TLS_CA,
            "CA certificate (PEM) that the server's certificate must chain to; enables TLS.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        _pem_file(
            connection.ENV_TLS_CERT,
            "Client certificate (PEM), with --tls-key, for a server that requires one"
            " (mutual TLS).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        _pem_file(connection.ENV_TLS_KEY, "The client certificate's private key (PEM)."),
    ] = None,
    tls_server_name: Annotated[
        str,
        typer.Option(
            envvar=connection.ENV_TLS_SERVER_NAME,
            metavar="NAME",
            help="Check the server's certificate for this name instead of --server's host.",
        ),
    ] = "",
    token: Annotated[
        str,
        typer.Option(
            envvar=connection.ENV_TOKEN,
            metavar="TOKEN",
            help="Bearer token, sent as `authorization: Bearer TOKEN` (prefer the variable:"
            " other users can read a command line).",
        ),
    ] = "",
) -> None:
    """Options for the commands that call a server (`workflows`, `runs`)."""
    if ctx.invoked_subcommand == "serve":
        return  # a server's environment may hold any client's variables: they are not its
    try:
        connection.check_address(server, "--server")
        connection.check_pem(
            ("--tls-cert", str(tls_cert or "")),
            ("--tls-key", str(tls_key or "")),
            ("--tls-ca", str(tls_ca or "")),
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        credentials = connection.Credentials(
            tls_ca=str(tls_ca or ""),
            tls_cert=str(tls_cert or ""),
            tls_key=str(tls_key or ""),
            tls_server_name=tls_server_name,
            token=token,
        )
    except connection.CredentialError as err:
        raise typer.BadParameter(err.problem, param_hint=err.option) from None
    ctx.obj = ClientOptions(server, timeout, as_json, credentials)


def main() -> None:
    """The console script's entry point: the global options may also follow the command."""
    app(args=argv.hoist(sys.argv[1:], app))
