"""A real Waystation server of the tests' own, for what the shared one does not serve.

`scripts/with_server.sh` serves `waystation.examples` and `tests.support.workflows` with the
default message limit. Some tests need more: the control-flow workflows of
`tests.support.flows` (two steps suspended in parallel, each with a resume label) or a raised
`--max-message-bytes`. This starts one as `with_server.sh` does: the Python in `$PYTHON`,
else the repository's `.venv`, with the repository on `PYTHONPATH`, serving from a fresh
SQLite file. The client's own venv holds none of the server: it runs in a process apart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from waystation_client import DeadlineExceededError, UnavailableError, WorkflowClient

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OwnServer:
    """A server process on a free loopback port; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log = directory / "server.log"
        python = os.environ.get("PYTHON") or str(REPO / ".venv" / "bin" / "python")
        command = [python, "-m", "waystation.cli", "serve", "--listen", self.address]
        command += ["--db", f"sqlite:///{directory / 'ws.db'}", *options]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._await_serving()

    def _await_serving(self) -> None:
        deadline = time.monotonic() + 20
        with WorkflowClient(self.address) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{self.log.read_text()}")
                try:
                    client.list_workflows(timeout=1)
                    return
                except (UnavailableError, DeadlineExceededError):
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"no answer in 20 s:\n{self.log.read_text()}") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
