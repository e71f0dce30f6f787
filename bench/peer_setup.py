"""The peers, set up and run on the same workload, machine and run as Waystation.

- Mastra: `bench/peers/mastra/` (its package.json and a package-lock.json without registry
  addresses), installed with `npm ci` and run by Node in-process: @mastra/core workflows with
  @mastra/libsql storage on a file.
- LangGraph: `bench/peers/langgraph/`, installed from its pinned requirements into
  `bench/.venv-peers` (never into Waystation's environment): `interrupt()` with
  AsyncSqliteSaver on a file.

A peer that cannot be installed or run is reported as such, with the reason; the bench goes on.
Each phase group runs in a fresh process, so the process's VmHWM is the peak of that group
(the burst alone has a process of its own).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MASTRA = HERE / "peers" / "mastra"
LANGGRAPH = HERE / "peers" / "langgraph"
PEERS_VENV = HERE / ".venv-peers"


class PeerUnavailable(Exception):
    """The peer could not be installed or run; the message says why."""


def _run(argv: list[str], cwd: Path, timeout: float) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{' '.join(argv[:3])}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
        raise PeerUnavailable(f"{' '.join(argv[:3])} exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout


def _stamp(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


@dataclass
class Peer:
    name: str
    version: str = ""
    error: str = ""
    argv: list[str] = field(default_factory=list)
    """The command that runs the peer's script; `--db` and `--phases` are added."""

    def run(self, db: Path, phases: str, timeout: float = 900) -> dict[str, Any]:
        out = _run([*self.argv, "--db", str(db), "--phases", phases], HERE, timeout)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise PeerUnavailable(f"{self.name} printed no result: {out[-300:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


def setup_mastra() -> Peer:
    peer = Peer("mastra")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        peer.error = "node and npm are not on PATH"
        return peer
    try:
        stamp = MASTRA / "node_modules" / ".bench-stamp"
        want = _stamp([MASTRA / "package.json", MASTRA / "package-lock.json"])
        if not stamp.exists() or stamp.read_text() != want:
            _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], MASTRA, 600)
            stamp.write_text(want)
        node_version = _run([node, "--version"], MASTRA, 30).strip()
        package = json.loads((MASTRA / "node_modules/@mastra/core/package.json").read_text())
        peer.version = f"@mastra/core {package['version']} on Node {node_version}"
        peer.argv = [node, str(MASTRA / "bench.mjs")]
    except (PeerUnavailable, OSError, ValueError) as exc:
        peer.error = str(exc)
    return peer


def setup_langgraph() -> Peer:
    peer = Peer("langgraph")
    python = PEERS_VENV / "bin" / "python"
    requirements = LANGGRAPH / "requirements.txt"
    try:
        stamp = PEERS_VENV / ".bench-stamp"
        want = _stamp([requirements])
        if not stamp.exists() or stamp.read_text() != want:
            if not python.exists():
                venv.EnvBuilder(with_pip=True, clear=True).create(PEERS_VENV)
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            _run([*pip, "-r", str(requirements)], HERE, 900)
            stamp.write_text(want)
        got = _run(
            [
                str(python),
                "-c",
                "from importlib.metadata import version; print(version('langgraph'))",
            ],
            HERE,
            60,
        )
        peer.version = f"langgraph {got.strip()} (Python {sys.version.split()[0]})"
        peer.argv = [str(python), str(LANGGRAPH / "bench_langgraph.py")]
    except (PeerUnavailable, OSError) as exc:
        peer.error = str(exc)
    return peer
