"""One bench run: floors, Waystation, peers and growth, measured on one machine in one go.

The machine is shared and noisy, so every comparison is a ratio of figures measured in the
same run, and the comparable ones are measured in interleaved rounds (echo, Waystation,
aiosqlite, Mastra, LangGraph, then again): a disturbance hits all of them alike, and the
median over rounds is reported.
"""

from __future__ import annotations

import json
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import instructions, procs, seed
from bench.peer_setup import Peer, PeerUnavailable, setup_langgraph, setup_mastra
from bench.stats import gaps_ms, median, percentile, rate, ratio


@dataclass
class Config:
    quick: bool
    rounds: int
    drivers: int
    echo_c1: int
    echo_c64: int
    seq_cycles: int
    seq_blocks: int
    c64_cycles: int
    burst: int
    sqlite_writes: int
    sqlite_concurrent: int
    mastra_seq: int
    mastra_c64: int
    langgraph_seq: int
    langgraph_c64: int
    loop_n: int
    loop_reps: int
    growth_levels: tuple[int, ...]
    growth_sample: int
    peers: bool = True
    growth: bool = True

    @classmethod
    def make(cls, quick: bool, **overrides: Any) -> Config:
        if quick:
            base = cls(
                quick=True, rounds=1, drivers=2, echo_c1=300, echo_c64=2000, seq_cycles=50,
                seq_blocks=5, c64_cycles=300, burst=100, sqlite_writes=200, sqlite_concurrent=1000,
                mastra_seq=50, mastra_c64=300, langgraph_seq=20, langgraph_c64=60,
                loop_n=300, loop_reps=1, growth_levels=(100, 2000), growth_sample=60,
            )  # fmt: skip
        else:
            base = cls(
                quick=False, rounds=3, drivers=2, echo_c1=2000, echo_c64=10000,
                seq_cycles=400, seq_blocks=10, c64_cycles=2000, burst=1000, sqlite_writes=1000,
                sqlite_concurrent=5000, mastra_seq=400, mastra_c64=2000, langgraph_seq=100,
                langgraph_c64=400, loop_n=3000, loop_reps=4,
                growth_levels=(100, 10_000, 1_000_000), growth_sample=400,
            )  # fmt: skip
        for key, value in overrides.items():
            if value is not None:
                setattr(base, key, value)
        return base


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, config: Config, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.rounds: list[dict[str, Any]] = []
        self.once: dict[str, Any] = {}
        self.notes: list[str] = []
        self.errors: dict[str, dict[str, int]] = {}
        self.peers: dict[str, Peer] = {}
        self._setups: list[Future[Peer]] = []

    # -- helpers --------------------------------------------------------------------------

    def _errors(self, section: str, merged: dict[str, Any]) -> None:
        if merged["errors"]:
            bucket = self.errors.setdefault(section, {})
            for name, count in merged["errors"].items():
                bucket[name] = bucket.get(name, 0) + count
            for sample in merged.get("samples", [])[:2]:
                self.notes.append(f"{section}: {sample}")

    def _path(self, name: str) -> Path:
        return self.workdir / name

    def _peers_ready(self) -> list[Peer]:
        for setup in self._setups:
            peer = setup.result()
            if peer.name not in self.peers:
                self.peers[peer.name] = peer
                if peer.error:
                    self.notes.append(f"{peer.name} not run: {peer.error}")
                    log(f"{peer.name} unavailable: {peer.error}")
        return list(self.peers.values())

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        if self.config.peers:
            # Both installs at once. A full run waits for them before measuring anything; a
            # quick run (whose figures mean little) measures Waystation meanwhile.
            log("setting up the peers (npm ci, bench/.venv-peers)")
            pool = ThreadPoolExecutor(2)
            self._setups = [pool.submit(setup_mastra), pool.submit(setup_langgraph)]
            pool.shutdown(wait=False)
            if not self.config.quick:
                self._peers_ready()
        echo = procs.echo(self._path("echo.log"))
        server = procs.waystation(self._path("main.db"), self._path("main.log"))
        try:
            echo.wait_ready(health=False)
            server.wait_ready()
            self._rounds(echo, server)
            self._long_runs(server)
        finally:
            server.stop()
            echo.stop()
        self._long_run_instructions()
        if self.config.growth:
            self._growth()
        return {
            "config": asdict(self.config),
            "machine": machine(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "peers": {n: {"version": p.version, "error": p.error} for n, p in self.peers.items()},
            "rounds": self.rounds,
            "once": self.once,
            "errors": self.errors,
            "notes": self.notes,
        }

    def _rounds(self, echo: procs.Server, server: procs.Server) -> None:
        c = self.config
        drv = self._path("drivers.log")
        one_echo, many_echo = (
            procs.Drivers(echo.target, 1, drv),
            procs.Drivers(echo.target, c.drivers, drv),
        )
        one_ws, many_ws = (
            procs.Drivers(server.target, 1, drv),
            procs.Drivers(server.target, c.drivers, drv),
        )
        try:
            # Warm both servers and every driver up before anything is measured.
            one_echo.split("echo", 200, "calls", concurrency=1)
            many_echo.split("echo", 1000, "calls", concurrency=64)
            one_ws.split("cycles", 30, "cycles", concurrency=1)
            many_ws.split("cycles", 200, "cycles", concurrency=64)
            for i in range(c.rounds):
                log(f"round {i + 1}/{c.rounds}")
                figures: dict[str, Any] = {}
                figures |= self._sequential(echo, server, one_echo, one_ws)
                figures |= self._echo(echo, many_echo)
                figures |= self._waystation(server, many_ws)
                figures |= self._sqlite(i)
                for peer in self._peers_ready():
                    if not peer.error:
                        figures |= self._peer(peer, i)
                self.rounds.append(figures)
        finally:
            for d in (one_echo, many_echo, one_ws, many_ws):
                d.close()

    def _sequential(
        self, echo: procs.Server, server: procs.Server, echo_1: procs.Drivers, ws_1: procs.Drivers
    ) -> dict[str, Any]:
        """The echo and Waystation at concurrency 1, in alternating blocks (echo calls, then
        cycles, `seq_blocks` times), so that the two latencies the ResumeRun target divides
        are measured over the same seconds. The machine's speed changes in spells of a few
        seconds: eight repetitions gave ratios of 2.78-3.61 measured one phase after the
        other, and 3.13-3.51 in ten blocks (docs/performance.md)."""
        c = self.config
        blocks = max(1, c.seq_blocks)
        echo_m = _Pooled("lat")
        ws_m = _Pooled("start", "resume", "cycle")
        for b in range(blocks):
            calls = c.echo_c1 * (b + 1) // blocks - c.echo_c1 * b // blocks
            echo_m.add(echo.pid, echo_1, "echo", calls, "calls")
            cycles = c.seq_cycles * (b + 1) // blocks - c.seq_cycles * b // blocks
            ws_m.add(server.pid, ws_1, "cycles", cycles, "cycles")
        echo_all, ws_all = echo_m.merged, ws_m.merged
        self._errors("echo.c1", echo_all)
        self._errors("waystation.seq", ws_all)
        echo_lat, resume_lat, cycles_done = echo_all["lat"], ws_all["resume"], ws_all["cycle"]
        echo_p50, resume_p50 = percentile(echo_lat, 50), percentile(resume_lat, 50)
        return {
            "echo.c1.server_cpu_ms_per_call": _per(echo_m.cpu, 0.0, len(echo_lat)),
            "echo.c1.p50_ms": echo_p50,
            "echo.c1.p99_ms": percentile(echo_lat, 99),
            "echo.c1.calls_per_s": rate(len(echo_lat), echo_all["wall"]),
            "ws.seq.server_cpu_ms_per_cycle": _per(ws_m.cpu, 0.0, len(cycles_done)),
            "ws.seq.start_p50_ms": percentile(ws_all["start"], 50),
            "ws.seq.start_p99_ms": percentile(ws_all["start"], 99),
            "ws.seq.resume_p50_ms": resume_p50,
            "ws.seq.resume_p99_ms": percentile(resume_lat, 99),
            "ws.seq.cycles_per_s": rate(len(cycles_done), ws_all["wall"]),
            "ws.seq.resume_over_echo": ratio(resume_p50, echo_p50),
        }

    def _echo(self, echo: procs.Server, many: procs.Drivers) -> dict[str, Any]:
        c = self.config
        cpu = procs.cpu_seconds(echo.pid)
        m = procs.merge(many.split("echo", c.echo_c64, "calls", concurrency=64), "lat")
        self._errors("echo.c64", m)
        return {
            "echo.c64.server_cpu_ms_per_call": _per(
                procs.cpu_seconds(echo.pid), cpu, len(m["lat"])
            ),
            "echo.c64.p50_ms": percentile(m["lat"], 50),
            "echo.c64.p99_ms": percentile(m["lat"], 99),
            "echo.c64.calls_per_s": rate(len(m["lat"]), m["wall"]),
        }

    def _waystation(self, server: procs.Server, many: procs.Drivers) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {}
        cpu = procs.cpu_seconds(server.pid)
        m = procs.merge(
            many.split("cycles", c.c64_cycles, "cycles", concurrency=64), "start", "resume", "cycle"
        )
        out["ws.c64.server_cpu_ms_per_cycle"] = _per(
            procs.cpu_seconds(server.pid), cpu, len(m["cycle"])
        )
        self._errors("waystation.c64", m)
        out["ws.c64.cycles_per_s"] = rate(len(m["cycle"]), m["wall"])
        out["ws.c64.cycle_p50_ms"] = percentile(m["cycle"], 50)
        out["ws.c64.cycle_p99_ms"] = percentile(m["cycle"], 99)
        # The burst: the server's peak RSS is reset first, so it is the burst's own.
        reset = procs.reset_peak(server.pid)
        started = procs.merge(many.split("start_many", c.burst, "runs"), "start")
        resumed = procs.merge(many.ask([{"op": "resume_many"}] * c.drivers), "resume")
        self._errors("waystation.burst", started)
        self._errors("waystation.burst", resumed)
        wall = started["wall"] + resumed["wall"]
        out["ws.burst.start_wall_s"] = started["wall"]
        out["ws.burst.resume_wall_s"] = resumed["wall"]
        out["ws.burst.wall_s"] = wall
        out["ws.burst.runs_per_s"] = rate(len(resumed["resume"]), wall)
        out["ws.burst.server_peak_mb"] = procs.peak_mb(server.pid)
        if not reset:
            self.notes.append("could not reset the server's VmHWM: burst peak is since start")
        return out

    def _sqlite(self, i: int) -> dict[str, Any]:
        c = self.config
        argv = [
            sys.executable, "-m", "bench.sqlite_floor", "--db", str(self._path(f"floor-{i}.db")),
            "--writes", str(c.sqlite_writes), "--concurrent-writes", str(c.sqlite_concurrent),
        ]  # fmt: skip
        got = json.loads(
            subprocess.run(
                argv,
                env=procs.child_env(),
                cwd=procs.ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        out = {"sqlite.seq.p50_ms": percentile(got["seq"]["lat"], 50)}
        for name in ("seq", "c64", "c64_grouped"):
            out[f"sqlite.{name}.writes_per_s"] = rate(got[name]["writes"], got[name]["wall"])
        out["sqlite.c64_grouped.rows_per_commit"] = (
            got["c64_grouped"]["writes"] / got["c64_grouped"]["batches"]
        )
        return out

    def _peer(self, peer: Peer, i: int) -> dict[str, Any]:
        c = self.config
        seq, c64 = (
            (c.mastra_seq, c.mastra_c64)
            if peer.name == "mastra"
            else (c.langgraph_seq, c.langgraph_c64)
        )
        db = self._path(f"{peer.name}-{i}.db")
        out: dict[str, Any] = {}
        try:
            got = peer.run(db, f"warmup:{max(5, seq // 10)},seq:{seq},c64:{c64}")
            self._peer_errors(peer.name, got)
            s, m = got["phases"]["seq"], got["phases"]["c64"]
            out[f"{peer.name}.seq.cycles_per_s"] = rate(s["done"], s["wall_s"])
            out[f"{peer.name}.seq.start_p50_ms"] = percentile(s["start_ms"], 50)
            out[f"{peer.name}.seq.resume_p50_ms"] = percentile(s["resume_ms"], 50)
            out[f"{peer.name}.c64.cycles_per_s"] = rate(m["done"], m["wall_s"])
            out[f"{peer.name}.peak_mb"] = got["peak_mb"]
            got = peer.run(self._path(f"{peer.name}-burst-{i}.db"), f"burst:{c.burst}")
            self._peer_errors(peer.name, got)
            b = got["phases"]["burst"]
            out[f"{peer.name}.burst.wall_s"] = b["wall_s"]
            out[f"{peer.name}.burst.runs_per_s"] = rate(b["done"], b["wall_s"])
            out[f"{peer.name}.burst.peak_mb"] = got["peak_mb"]
        except (PeerUnavailable, KeyError, ValueError) as exc:
            self.notes.append(f"{peer.name} round {i + 1} failed: {exc}")
            log(f"{peer.name} failed: {exc}")
        return out

    def _peer_errors(self, name: str, got: dict[str, Any]) -> None:
        errors = {k: v for k, v in got.get("errors", {}).items() if not k.startswith("_")}
        if errors:
            self._errors(name, {"errors": errors, "samples": [got["errors"].get("_sample", "")]})

    # -- growth within one run -------------------------------------------------------------

    def _long_runs(self, server: procs.Server) -> None:
        """Time per iteration of a long `.dountil` loop and per item of a long `.foreach`,
        near the start and near the end of one run (the step records perf_counter() in the
        server; see bench/workflows.py)."""
        c = self.config
        n = c.loop_n
        width = max(10, min(100, n // 6))
        driver = procs.Drivers(server.target, 1, self._path("drivers.log"))
        shapes = {"loop": ("bench-loop", {"i": 0, "n": n}), "foreach": ("bench-foreach", {"n": n})}
        early: dict[str, list[float]] = {name: [] for name in shapes}
        late: dict[str, list[float]] = {name: [] for name in shapes}
        try:
            # Loop and foreach runs alternate, so that a slow spell of the machine falls on
            # both, on early and late windows of different runs alike.
            for rep in range(c.loop_reps):
                for name, (workflow, data) in shapes.items():
                    log(f"{name} of {n} ({rep + 1}/{c.loop_reps})")
                    answer = driver.ask([{"op": "run", "workflow": workflow, "input": data}])[0]
                    times = answer["result"]["times"]
                    if len(times) != n:
                        self.notes.append(f"{name}: {len(times)} timings for {n} iterations")
                    gaps = gaps_ms(times)  # gaps[k]: from iteration k to iteration k + 1
                    early[name] += gaps[10 : 10 + width]
                    late[name] += gaps[len(gaps) - width :]
            for name in shapes:
                self.once[f"{name}.n"] = n
                self.once[f"{name}.window"] = width
                self.once[f"{name}.early_ms"] = percentile(early[name], 50)
                self.once[f"{name}.late_ms"] = percentile(late[name], 50)
        finally:
            driver.close()

    def _long_run_instructions(self) -> None:
        """Instructions per iteration of the same long loop and foreach, early and late,
        counted by valgrind (`bench.instructions.per_iteration`). A timed iteration moves
        with the machine's speed, which on these shared machines changes by up to two
        thirds in spells of a tenth of a second and more; a count does not. The windows are
        a third of the run wide, so that each holds whole cycles of the WAL's checkpoints,
        whose work comes in lumps."""
        n = self.config.loop_n
        width = n // 3
        for shape in instructions.LONG_RUNS:
            self.once[f"{shape}.counted_width"] = width  # the table's labels say it
        if shutil.which("valgrind") is None:
            self.notes.append("valgrind not installed: iterations not counted in instructions")
            return
        server_tree = procs.ROOT / "server"
        for shape in instructions.LONG_RUNS:
            log(f"{shape} of {n}: instructions per iteration (valgrind)")
            try:
                early, late = instructions.per_iteration(server_tree, shape, n, width)
            except (subprocess.CalledProcessError, RuntimeError) as exc:
                self.errors.setdefault(f"{shape}.instructions", {})["failed"] = 1
                self.notes.append(f"{shape}: counting failed: {exc}"[:500])
                continue
            self.once[f"{shape}.early_instructions"] = early
            self.once[f"{shape}.late_instructions"] = late

    def _growth(self) -> None:
        """ResumeRun p50 with many suspended runs stored: one file and one server per
        level, all up at once, measured in interleaved chunks."""
        c = self.config
        levels = c.growth_levels
        servers: dict[int, procs.Server] = {}
        drivers: dict[int, procs.Drivers] = {}
        samples: dict[int, list[str]] = {}
        expect: dict[int, int] = {}
        # The same number of resumes at every level, at most what the smallest store holds.
        sample = min(c.growth_sample, min(levels) - 20)
        self.once["growth.sample"] = sample
        try:
            for level in levels:
                db = self._path(f"growth-{level}.db")
                expect[level] = self._seed(db, level)
                samples[level] = seed.sample_suspended(str(db), sample + 20)
            for level in levels:
                server = procs.waystation(
                    self._path(f"growth-{level}.db"), self._path(f"growth-{level}.log")
                )
                servers[level] = server
            for level, server in servers.items():
                server.wait_ready(timeout=600)
                self.once[f"growth.{level}.server_rss_start_mb"] = (
                    procs.status_kb(server.pid, "VmRSS") or 0
                ) / 1024
                drivers[level] = procs.Drivers(server.target, 1, self._path("drivers.log"))
            log(f"measuring ResumeRun over {sample} sampled runs per level")
            lat: dict[int, list[float]] = {level: [] for level in levels}
            chunk = max(5, sample // 8)
            for level in levels:  # warm-up: 20 resumes each, not counted
                drivers[level].ask(
                    [{"op": "resume_ids", "ids": samples[level][:20], "expect": expect[level]}]
                )
            todo = {level: samples[level][20:] for level in levels}
            while any(todo.values()):
                for level in levels:
                    ids, todo[level] = todo[level][:chunk], todo[level][chunk:]
                    if ids:
                        got = procs.merge(
                            drivers[level].ask(
                                [{"op": "resume_ids", "ids": ids, "expect": expect[level]}]
                            ),
                            "resume",
                        )
                        self._errors(f"growth.{level}", got)
                        lat[level] += got["resume"]
            for level in levels:
                self.once[f"growth.{level}.resume_p50_ms"] = percentile(lat[level], 50)
                self.once[f"growth.{level}.resume_p99_ms"] = percentile(lat[level], 99)
                self.once[f"growth.{level}.server_peak_mb"] = procs.peak_mb(servers[level].pid)
                self.once[f"growth.{level}.db_mb"] = (
                    self._path(f"growth-{level}.db").stat().st_size / 2**20
                )
        finally:
            for d in drivers.values():
                d.close()
            for s in servers.values():
                s.stop()

    def _seed(self, db: Path, level: int) -> int:
        """A store with `level` suspended runs: one made by a real server, the rest copies.
        Returns the value the template run suspended with."""
        server = procs.waystation(db, self._path(f"growth-{level}.log"))
        try:
            server.wait_ready()
            driver = procs.Drivers(server.target, 1, self._path("drivers.log"))
            driver.ask([{"op": "start_many", "runs": 1}])
            driver.close()
        finally:
            server.stop()
        with sqlite3.connect(db) as conn:
            run_id, record = conn.execute(
                "SELECT r.run_id, s.record FROM runs r JOIN steps s ON s.run_id = r.run_id"
                " WHERE r.status = 'suspended' AND s.path = 'approve'"
            ).fetchone()
        value = int(json.loads(record)["suspend_payload"]["value"])
        template = seed.read_template(str(db), run_id)
        log(f"seeding {level:,} suspended runs into {db.name}")
        started = time.monotonic()
        seed.copy_runs(str(db), template, level - 1)
        self.once[f"growth.{level}.seed_s"] = time.monotonic() - started
        self.once[f"growth.{level}.stored_runs"] = seed.count_suspended(str(db))
        return value


class _Pooled:
    """Blocks of one measurement at concurrency 1, pooled: `procs.merge` of every block's
    answers, but with the blocks' walls and the server's CPU seconds added up (the merged
    wall would span the other measurement's blocks in between)."""

    def __init__(self, *keys: str) -> None:
        self.keys = keys
        self.answers: list[dict[str, Any]] = []
        self.wall = 0.0
        self.cpu: float | None = 0.0

    def add(self, pid: int, pool: procs.Drivers, op: str, total: int, key: str) -> None:
        """`total` of `key` in one block, one at a time; `pid` is the server's."""
        before = procs.cpu_seconds(pid)
        answers = pool.split(op, total, key, concurrency=1)
        after = procs.cpu_seconds(pid)
        spent = None if before is None or after is None else after - before
        self.cpu = None if self.cpu is None or spent is None else self.cpu + spent
        self.wall += procs.merge(answers)["wall"]
        self.answers += answers

    @property
    def merged(self) -> dict[str, Any]:
        return {**procs.merge(self.answers, *self.keys), "wall": self.wall}


def _per(after: float | None, before: float | None, count: int) -> float | None:
    """Milliseconds of CPU per operation between two cpu_seconds() readings."""
    if after is None or before is None or not count:
        return None
    return (after - before) * 1000 / count


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import os

        info["cpus"] = os.cpu_count()
        info["load_1m_at_end"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


Summarize = Callable[[list[dict[str, Any]]], dict[str, Any]]


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds that measured it (peaks: the highest)."""
    keys = dict.fromkeys(k for r in rounds for k in r)
    out = {}
    for key in keys:
        values = [r.get(key) for r in rounds]
        present = [v for v in values if v is not None]
        out[key] = (max(present) if present else None) if "peak" in key else median(values)
    return out
