"""A real `waystation serve` process on a free port, for CLI and crash tests.

    with ServerProcess(tmp_path / "x.db") as server:
        ...  # server.address is "127.0.0.1:PORT", serving and healthy
        server.kill()        # SIGKILL: a crash, nothing drained
        server.start()       # the same port and database file again

`db_url` serves another database instead of the SQLite file (`postgresql://...`); the
file's name then only names the log. A server given TLS options (`extra_args`) is asked
whether it is healthy over a channel with the `tls` credentials. The process writes its
log to `log_path`; a start that fails raises with that log attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from waystation.api.v1.service_pb2_grpc import WorkflowServiceStub

# Poll the port every 50 ms instead of backing off for seconds after the first refusal.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """`python -m waystation.cli serve` on 127.0.0.1 and a free port, with a SQLite file
    (or the database at `db_url`)."""

    def __init__(
        self,
        db_path: Path,
        *,
        workflows: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        db_url: str | None = None,
        cwd: Path | None = None,
        console_script: bool = False,
        tls: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.db_path = db_path
        self.db_url = db_url
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = db_path.with_name(f"{db_path.stem}-server.log")
        self.startup_timeout = startup_timeout
        self._args = [arg for module in workflows for arg in ("--workflows", module)]
        self._args += list(extra_args)
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._console_script = console_script
        """Run the installed `waystation` script (as README's commands do), not `python -m`,
        which puts the working directory on sys.path by itself."""
        self._process: subprocess.Popen[bytes] | None = None
        self._tls = tls

    @property
    def command(self) -> list[str]:
        """The command line that starts the server."""
        db = self.db_url or f"sqlite:///{self.db_path}"
        program = [str(Path(sys.executable).with_name("waystation"))]
        if not self._console_script:
            program = [sys.executable, "-m", "waystation.cli"]
        base = [*program, "serve", "--listen", self.address]
        return [*base, "--db", db, *self._args]

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> ServerProcess:
        """Start the process and wait until its health service answers SERVING."""
        if self.running:
            raise RuntimeError(f"the server on {self.address} is already running")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self._env, cwd=self._cwd
            )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` and wait for the process to exit; returns its exit code."""
        process = self._process
        if process is None:
            raise RuntimeError("the server was never started")
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def kill(self) -> int:
        """SIGKILL: the process dies at once, as in a crash."""
        return self.stop(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        if self._tls is None:
            channel = grpc.insecure_channel(self.address, options=FAST_RECONNECT)
        else:
            channel = grpc.secure_channel(self.address, self._tls, options=FAST_RECONNECT)
        with channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"the server exited during startup:\n{self.log}")
                if _serving(health):
                    return
                time.sleep(0.05)
        raise TimeoutError(f"the server on {self.address} did not become healthy:\n{self.log}")


def _serving(health: health_pb2_grpc.HealthStub) -> bool:
    request = health_pb2.HealthCheckRequest(service="")
    try:
        response = health.Check(request, timeout=1.0)
    except grpc.RpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


# -- from async tests -------------------------------------------------------------------


async def start(server: ServerProcess) -> None:
    """Start (or restart) the process without blocking the event loop."""
    await asyncio.to_thread(server.start)


async def kill(server: ServerProcess) -> None:
    """SIGKILL the process (it must die of it) without blocking the event loop."""
    assert await asyncio.to_thread(server.kill) == -signal.SIGKILL


@contextlib.asynccontextmanager
async def client(server: ServerProcess) -> AsyncIterator[WorkflowServiceStub]:
    """A stub on a channel that reconnects quickly across the process's restarts."""
    async with grpc.aio.insecure_channel(server.address, options=FAST_RECONNECT) as channel:
        yield WorkflowServiceStub(channel)


@contextlib.asynccontextmanager
async def serving(
    server: ServerProcess, *, graceful: bool = False
) -> AsyncIterator[WorkflowServiceStub]:
    """Start `server` and yield a stub on it; then stop it: with SIGTERM if `graceful` (it
    must exit 0), else with SIGKILL."""
    try:
        await start(server)
        async with client(server) as stub:
            yield stub
    finally:
        if server.running and graceful:
            assert server.stop() == 0, server.log[-2000:]
        elif server.running:
            server.kill()
