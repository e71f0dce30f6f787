"""The root `waystation` command: global client options and the command groups."""

from __future__ import annotations

from typing import Annotated

import typer

from waystation.cli import runs, workflows
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


@app.callback()
def client_options(
    ctx: typer.Context,
    server: Annotated[
        str, typer.Option(envvar="WAYSTATION_SERVER", help="The server's host:port.")
    ] = "127.0.0.1:50051",
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds each call may take (its gRPC deadline).")
    ] = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print responses as proto3 JSON instead of tables.")
    ] = False,
) -> None:
    """Options for the commands that call a server (`workflows`, `runs`)."""
    ctx.obj = ClientOptions(server=server, timeout=timeout, as_json=as_json)


def main() -> None:
    """The console script's entry point."""
    app()
