"""The `waystation` command line: `serve`, and client commands for people.

Client commands talk gRPC to a server and exit with the call's numeric gRPC status code
(0 on success); usage errors, such as `--data` that is not JSON, exit with 2.
"""

from waystation.cli.app import app, main

__all__ = ["app", "main"]
