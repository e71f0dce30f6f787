"""The `waystation` command line: `serve`, and client commands for people.

Client commands talk gRPC to a server and exit with the call's numeric gRPC status code
(0 on success); usage errors, such as `--data` that is not JSON, exit with 2.
"""

import os

# gRPC's C core logs to stderr (connection failures, DNS, bind errors) beside the one line a
# command prints; GRPC_VERBOSITY=error or =debug shows those logs again. Read when gRPC
# starts, so set before anything imports it.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from waystation.cli.app import app, main

__all__ = ["app", "main"]
