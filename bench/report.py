"""The table a bench run prints, the targets of issue 6 as ratios, and the JSON it writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.stats import ratio

INSTR = "instructions"

# (key, what it is, unit). Keys come from run.py; "{big}" is the largest growth level.
FIGURES: list[tuple[str, str, str]] = [
    ("echo.c1.p50_ms", "floor: grpc.aio echo, concurrency 1, p50", "ms"),
    ("echo.c1.p99_ms", "floor: grpc.aio echo, concurrency 1, p99", "ms"),
    ("echo.c1.calls_per_s", "floor: grpc.aio echo, concurrency 1", "calls/s"),
    ("echo.c64.p50_ms", "floor: grpc.aio echo, concurrency 64, p50", "ms"),
    ("echo.c64.p99_ms", "floor: grpc.aio echo, concurrency 64, p99", "ms"),
    ("echo.c64.calls_per_s", "floor: grpc.aio echo, concurrency 64", "calls/s"),
    ("echo.c64.server_cpu_ms_per_call", "floor: echo server CPU per call, concurrency 64", "ms"),
    ("sqlite.seq.p50_ms", "floor: aiosqlite durable write, sequential, p50", "ms"),
    ("sqlite.seq.writes_per_s", "floor: aiosqlite durable write, sequential", "writes/s"),
    ("sqlite.c64.writes_per_s", "floor: aiosqlite, 64 writers, 1 txn each", "writes/s"),
    ("sqlite.c64_grouped.writes_per_s", "floor: aiosqlite, 64 writers, group commit", "writes/s"),
    ("sqlite.c64_grouped.rows_per_commit", "floor: rows per group commit", "rows"),
    ("ws.seq.start_p50_ms", "Waystation sequential: StartRun p50", "ms"),
    ("ws.seq.start_p99_ms", "Waystation sequential: StartRun p99", "ms"),
    ("ws.seq.resume_p50_ms", "Waystation sequential: ResumeRun p50", "ms"),
    ("ws.seq.resume_p99_ms", "Waystation sequential: ResumeRun p99", "ms"),
    ("ws.seq.cycles_per_s", "Waystation sequential", "cycles/s"),
    ("ws.seq.server_cpu_ms_per_cycle", "Waystation sequential: server CPU per cycle", "ms"),
    ("ws.c64.cycles_per_s", "Waystation concurrency 64", "cycles/s"),
    ("ws.c64.cycle_p50_ms", "Waystation concurrency 64: cycle p50", "ms"),
    ("ws.c64.cycle_p99_ms", "Waystation concurrency 64: cycle p99", "ms"),
    ("ws.c64.server_cpu_ms_per_cycle", "Waystation concurrency 64: server CPU per cycle", "ms"),
    ("ws.burst.start_wall_s", "Waystation burst: all started (wall)", "s"),
    ("ws.burst.resume_wall_s", "Waystation burst: all resumed (wall)", "s"),
    ("ws.burst.wall_s", "Waystation burst: start + resume (wall)", "s"),
    ("ws.burst.runs_per_s", "Waystation burst", "runs/s"),
    ("ws.burst.server_peak_mb", "Waystation server peak RSS in the burst", "MB"),
    ("mastra.seq.cycles_per_s", "Mastra in-process sequential", "cycles/s"),
    ("mastra.seq.start_p50_ms", "Mastra sequential: start p50", "ms"),
    ("mastra.seq.resume_p50_ms", "Mastra sequential: resume p50", "ms"),
    ("mastra.c64.cycles_per_s", "Mastra in-process concurrency 64", "cycles/s"),
    ("mastra.burst.wall_s", "Mastra burst: start + resume (wall)", "s"),
    ("mastra.burst.runs_per_s", "Mastra burst", "runs/s"),
    ("mastra.peak_mb", "Mastra process peak RSS (seq + c64)", "MB"),
    ("mastra.burst.peak_mb", "Mastra process peak RSS in the burst", "MB"),
    ("langgraph.seq.cycles_per_s", "LangGraph in-process sequential", "cycles/s"),
    ("langgraph.seq.start_p50_ms", "LangGraph sequential: start p50", "ms"),
    ("langgraph.seq.resume_p50_ms", "LangGraph sequential: resume p50", "ms"),
    ("langgraph.c64.cycles_per_s", "LangGraph in-process concurrency 64", "cycles/s"),
    ("langgraph.burst.wall_s", "LangGraph burst: start + resume (wall)", "s"),
    ("langgraph.burst.runs_per_s", "LangGraph burst", "runs/s"),
    ("langgraph.peak_mb", "LangGraph process peak RSS (seq + c64)", "MB"),
    ("langgraph.burst.peak_mb", "LangGraph process peak RSS in the burst", "MB"),
    ("loop.early_ms", "loop: one iteration near iteration 10", "ms"),
    ("loop.late_ms", "loop: one iteration near iteration {loop.n}", "ms"),
    ("foreach.early_ms", "foreach: one item near item 10", "ms"),
    ("foreach.late_ms", "foreach: one item near item {foreach.n}", "ms"),
    ("loop.early_instructions", "loop: one iteration, iterations 10 to {loop.early_end}", INSTR),
    ("loop.late_instructions", "loop: one iteration, the last {loop.counted_width}", INSTR),
    ("foreach.early_instructions", "foreach: one item, items 10 to {foreach.early_end}", INSTR),
    ("foreach.late_instructions", "foreach: one item, the last {foreach.counted_width}", INSTR),
]

GROWTH = [
    ("resume_p50_ms", "ResumeRun p50 with {n} runs stored", "ms"),
    ("resume_p99_ms", "ResumeRun p99 with {n} runs stored", "ms"),
    ("server_peak_mb", "server peak RSS with {n} runs stored", "MB"),
    ("db_mb", "store file with {n} runs", "MB"),
]


@dataclass
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None
    how: str


def figures(
    summary: dict[str, Any], once: dict[str, Any], levels: list[int]
) -> list[tuple[str, Any, str]]:
    rows = []
    words = {k: v for k, v in once.items() if isinstance(v, int)}
    for shape in ("loop", "foreach"):
        words[f"{shape}.early_end"] = 10 + once.get(f"{shape}.counted_width", 0)
    for key, label, unit in FIGURES:
        for name, number in words.items():
            label = label.replace("{" + name + "}", f"{number:,}")
        rows.append((label, summary.get(key, once.get(key)), unit))
    for level in levels:
        for key, label, unit in GROWTH:
            rows.append((label.format(n=f"{level:,}"), once.get(f"growth.{level}.{key}"), unit))
    return rows


def targets(summary: dict[str, Any], once: dict[str, Any], levels: list[int]) -> list[Target]:
    s = summary
    ws = s.get("ws.c64.cycles_per_s")
    mastra = [
        s.get(k)
        for k in ("mastra.seq.cycles_per_s", "mastra.c64.cycles_per_s", "mastra.burst.runs_per_s")
    ]
    mastra_best = max((m for m in mastra if m is not None), default=None)
    echo64 = s.get("echo.c64.calls_per_s")
    small, big = (levels[0], levels[-1]) if levels else (None, None)
    grown = ratio(
        once.get(f"growth.{big}.resume_p50_ms"), once.get(f"growth.{small}.resume_p50_ms")
    )
    out = [
        _at_least(
            "c64 cycles/s / Mastra in-process cycles/s", ratio(ws, mastra_best), 2.0,
            "Waystation over gRPC at concurrency 64, over the best of Mastra's sequential, "
            "concurrency-64 and burst rates",
        ),
        _at_least(
            "c64 cycles/s / (echo c64 calls/s / 2)", ratio(ws, echo64 / 2 if echo64 else None),
            0.5, "a cycle is two calls; the floor is the bare grpc.aio echo",
        ),
        _at_most(
            "ResumeRun p50 / echo p50, concurrency 1",
            s.get("ws.seq.resume_over_echo"), 3.0,
            "sequential calls, one client; each round's ratio of its two p50s, both measured"
            " in alternating blocks",
        ),
        _at_most(
            f"resume p50 at {big:,} runs / at {small:,}" if big else "resume p50 growth",
            grown, 1.2, "suspended runs stored; interleaved measurements, one server per store",
        ),
        _at_most(
            f"loop iteration at {once.get('loop.n', 0):,} / at 10",
            ratio(once.get("loop.late_ms"), once.get("loop.early_ms")), 1.2,
            "one .dountil run; medians of the per-iteration times in each window",
        ),
        _at_most(
            f"foreach item at {once.get('foreach.n', 0):,} / at 10",
            ratio(once.get("foreach.late_ms"), once.get("foreach.early_ms")), 1.2,
            "one .foreach run at concurrency 1; medians per window",
        ),
        _at_most(
            f"loop iteration at {once.get('loop.n', 0):,} / at 10, counted",
            ratio(once.get("loop.late_instructions"), once.get("loop.early_instructions")),
            1.2, "instructions per iteration, the last third of one run over its first",
        ),
        _at_most(
            f"foreach item at {once.get('foreach.n', 0):,} / at 10, counted",
            ratio(once.get("foreach.late_instructions"), once.get("foreach.early_instructions")),
            1.2, "instructions per item, the last third of one run over its first",
        ),
        _at_most(
            "server peak RSS in the burst (MB)", s.get("ws.burst.server_peak_mb"), 150.0,
            "the runs of the burst started at once, then resumed at once",
        ),
        _at_most(
            f"server peak RSS with {big:,} runs stored (MB)" if big else "server RSS, big store",
            once.get(f"growth.{big}.server_peak_mb"), 150.0, "after the sampled resumes",
        ),
    ]  # fmt: skip
    return out


def _at_least(name: str, value: float | None, goal: float, how: str) -> Target:
    return Target(name, value, f">= {goal:g}", None if value is None else value >= goal, how)


def _at_most(name: str, value: float | None, goal: float, how: str) -> Target:
    return Target(name, value, f"<= {goal:g}", None if value is None else value <= goal, how)


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def table(rows: list[tuple[str, Any, str]], target_rows: list[Target]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{width}}  {'value':>10}  unit", "-" * (width + 22)]
    lines += [f"{label:<{width}}  {fmt(value):>10}  {unit}" for label, value, unit in rows]
    lines.append("")
    tw = max(len(t.name) for t in target_rows)
    lines.append(f"{'target':<{tw}}  {'ratio':>8}  {'goal':>7}  met")
    lines.append("-" * (tw + 28))
    for t in target_rows:
        met = "n/a" if t.met is None else ("yes" if t.met else "NO")
        lines.append(f"{t.name:<{tw}}  {fmt(t.value):>8}  {t.goal:>7}  {met}")
    return "\n".join(lines)


def markdown(rows: list[tuple[str, Any, str]], target_rows: list[Target]) -> str:
    """The same table in Markdown (for docs/performance.md)."""
    lines = ["| measure | value | unit |", "|---|---:|---|"]
    lines += [f"| {label} | {fmt(value)} | {unit} |" for label, value, unit in rows]
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    for t in target_rows:
        met = "n/a" if t.met is None else ("yes" if t.met else "**no**")
        lines.append(f"| {t.name} | {fmt(t.value)} | {t.goal} | {met} |")
    return "\n".join(lines)
