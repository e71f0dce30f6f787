"""Processes of a bench run: servers, load drivers, and what the kernel says about them.

Every server runs in a process of its own and every client call crosses real loopback gRPC.
Peak memory is the kernel's high-water mark (`VmHWM` in /proc/PID/status); writing 5 to
/proc/PID/clear_refs resets it, so one process's peak can be read for one phase.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: on PYTHONPATH of every child, so `bench.*` imports."""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


@contextlib.contextmanager
def worktrees(revisions: dict[str, str], scratch: Path) -> Iterator[dict[str, Path]]:
    """Each revision checked out (detached) in a git worktree `scratch/NAME`, by name;
    removed again on exit."""
    trees: dict[str, Path] = {}
    git = ["git", "-C", str(ROOT), "worktree"]
    try:
        for name, rev in revisions.items():
            tree = scratch / name
            subprocess.run([*git, "add", "--detach", "-q", str(tree), rev], check=True)
            trees[name] = tree
        yield trees
    finally:
        for tree in trees.values():
            subprocess.run([*git, "remove", "--force", str(tree)], check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/PID/status (VmHWM, VmRSS), or None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_mb(pid: int) -> float | None:
    kb = status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0, needs ptrace rights)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Server:
    """A server process (Waystation or the echo floor) on 127.0.0.1:port."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            argv, env=child_env(), stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0, health: bool = True) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
                ready = grpc.channel_ready_future(channel)
                try:
                    ready.result(timeout=1)
                    if not health:
                        return
                    stub = health_pb2_grpc.HealthStub(channel)
                    got = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if got.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except (grpc.FutureTimeoutError, grpc.RpcError):
                    pass
                finally:
                    ready.cancel()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready in {timeout}s: {self.tail()}")
                time.sleep(0.1)

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def waystation(db: Path, log: Path, port: int | None = None) -> Server:
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "waystation.cli",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--db",
        f"sqlite:///{db}",
        "--workflows",
        "bench.workflows",
        "--log-level",
        "warning",
    ]
    return Server("waystation", argv, port, log)


def echo(log: Path) -> Server:
    port = free_port()
    return Server("echo", [sys.executable, "-m", "bench.echo", "--port", str(port)], port, log)


class Drivers:
    """`count` driver processes aimed at one target, released together per command."""

    def __init__(self, target: str, count: int, log: Path) -> None:
        self._log_file = log.open("ab")
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.driver", "--target", target],
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log_file,
                text=True,
                cwd=ROOT,
            )
            for _ in range(count)
        ]
        for proc in self.procs:
            self._read(proc)

    def _read(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a driver exited ({proc.wait()}); see {self._log_file.name}")
        answer: dict[str, Any] = json.loads(line)
        if "fatal" in answer:
            raise RuntimeError(f"driver failed: {answer['fatal']}")
        return answer

    def ask(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send command i to driver i (all before reading any answer); the answers."""
        for proc, command in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        return [self._read(proc) for proc in self.procs]

    def split(self, op: str, total: int, key: str, **same: Any) -> list[dict[str, Any]]:
        """Command `op` with `total` of `key` (and `concurrency`) shared among the drivers."""
        n = len(self.procs)
        commands = []
        for i in range(n):
            cmd = {"op": op, key: total // n + (1 if i < total % n else 0), **same}
            if "concurrency" in same:
                c = same["concurrency"]
                cmd["concurrency"] = max(1, c // n + (1 if i < c % n else 0))
            commands.append(cmd)
        return self.ask(commands)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                assert proc.stdin is not None
                with contextlib.suppress(OSError):
                    proc.stdin.write("quit\n")
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._log_file.close()


def merge(answers: list[dict[str, Any]], *keys: str) -> dict[str, Any]:
    """Answers of several drivers as one: latencies joined, wall time from the first start
    to the last end, errors added up."""
    errors: dict[str, int] = {}
    for a in answers:
        for name, count in a["errors"].items():
            errors[name] = errors.get(name, 0) + count
    out: dict[str, Any] = {
        "wall": max(a["t1"] for a in answers) - min(a["t0"] for a in answers),
        "errors": errors,
        "samples": [s for a in answers for s in a["samples"]][:5],
    }
    for key in keys:
        out[key] = [x for a in answers for x in a.get(key, [])]
    return out
