"""The crash suite's checker: judges a load's history from the client's call log, the runs as
read back after the last restart, and the side-effect lines the steps wrote.

It proves, run by run:
- every acknowledged StartRun's run exists; every acknowledged ResumeRun's data is the gate's
  resume data and the gate completed with it (a resume of unknown outcome left the gate
  either waiting or completed with that same data) -- else a *lost* operation;
- no completed step ran twice: the committed execution (the token in the stored output) has
  exactly one done line and is the step's last execution; each server process ran the step
  at most once (an execution not committed must have been cut short by a kill, so a re-run
  happens only in a later process) -- else a *duplicate*;
- every run settled (SUCCESS, or SUSPENDED at a gate) -- else *unsettled*;
- no step ran that the run does not show as done, no run failed, no run exists that no
  client asked for, and no call got a status outside the expected ones -- else *other*.

An execution cut short by a kill (a start line, and maybe a done line if the kill came
between the step's return and the commit of its completion) is not a duplicate: its effect
was never committed, so the step runs again (at-least-once for the step in flight). Those are
counted apart, as `reruns_cut` and `reruns_uncommitted`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from tests.crash.flows import LOAD_GATES, LOAD_STEPS

SETTLED = {"SUCCESS", "SUSPENDED"}


@dataclass
class Call:
    """One call a client made and what it learnt of the outcome."""

    kind: str  # "start" | "resume"
    run_id: str
    gate: str = ""
    value: int | None = None
    outcome: str = ""  # "ok" | "unknown" | "rejected" | "error"
    code: str = ""
    detail: str = ""
    at: float = 0.0

    def with_outcome(self, outcome: str, code: str, detail: str = "") -> Call:
        return replace(self, outcome=outcome, code=code, detail=detail, at=time.time())


@dataclass(frozen=True)
class Line:
    kind: str  # "start" | "done"
    run_id: str
    step: str
    token: str
    pid: int


@dataclass
class StoredStep:
    status: str  # StepStatus name without its prefix: SUCCESS, SUSPENDED, ...
    output: Any = None
    resume_payload: Any = None


@dataclass
class StoredRun:
    status: str  # RunStatus name without its prefix
    steps: dict[str, StoredStep] = field(default_factory=dict)
    error: str = ""


def parse_lines(text: str) -> list[Line]:
    out = []
    for raw in text.splitlines():
        kind, where, token, pid = raw.split()
        run_id, _, step = where.rpartition(":")
        out.append(Line(kind, run_id, step, token, int(pid)))
    return out


@dataclass
class Verdict:
    runs: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    """"start ok", "resume unknown", ... -> how many."""
    unknown_took_effect: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    reruns_cut: int = 0
    reruns_uncommitted: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def violations(self) -> list[str]:
        return self.lost + self.duplicates + self.unsettled + self.other

    def summary(self, seed: int, kills: int, processes: int) -> str:
        c = self.calls
        return (
            f"crash suite: seed={seed} kills={kills} processes={processes} runs={self.runs}"
            f" ({', '.join(f'{k}={v}' for k, v in sorted(self.statuses.items()))})"
            f" | acknowledged: starts={c['start ok']} resumes={c['resume ok']}"
            f" | unknown outcome: starts={c['start unknown']} resumes={c['resume unknown']}"
            f" (took effect: starts={self.unknown_took_effect['start']}"
            f" resumes={self.unknown_took_effect['resume']})"
            f" | lost acknowledged operations: {len(self.lost)}"
            f" | duplicate step executions: {len(self.duplicates)}"
            f" | unsettled runs: {len(self.unsettled)}"
            f" | other violations: {len(self.other)}"
            f" | steps re-run after a kill: cut short={self.reruns_cut},"
            f" done but not committed={self.reruns_uncommitted}"
        )


def check(
    calls: list[Call],
    runs: dict[str, StoredRun | None],
    logs: dict[str, list[Line]],
    pids: list[int],
    stored_ids: set[str] | None = None,
) -> Verdict:
    """Judge a load: `runs` holds every run id the clients used (None: not in the store),
    `logs` each run's side-effect lines, `pids` the server processes in order (all but the
    last were killed), `stored_ids` every run id the store lists."""
    verdict = Verdict(runs=sum(run is not None for run in runs.values()))
    verdict.calls.update(f"{call.kind} {call.outcome}" for call in calls)
    verdict.other += [
        f"{c.kind} {c.run_id} {c.gate}: unexpected status {c.code}: {c.detail}"
        for c in calls
        if c.outcome == "error"
    ]
    by_run: dict[str, list[Call]] = {}
    for c in calls:
        by_run.setdefault(c.run_id, []).append(c)
    for run_id, run in runs.items():
        _check_run(verdict, run_id, run, by_run.get(run_id, []), logs.get(run_id, []), pids)
    for run_id in sorted((stored_ids or set()) - set(runs)):
        verdict.other.append(f"{run_id}: in the store, but no client ever started it")
    return verdict


def _check_run(
    verdict: Verdict,
    run_id: str,
    run: StoredRun | None,
    calls: list[Call],
    lines: list[Line],
    pids: list[int],
) -> None:
    acked = {(c.kind, c.gate): c for c in calls if c.outcome == "ok"}
    unknown = {(c.kind, c.gate): c for c in calls if c.outcome == "unknown"}
    if run is None:
        if ("start", "") in acked:
            verdict.lost.append(f"{run_id}: StartRun was acknowledged, the run does not exist")
        if lines:
            verdict.other.append(f"{run_id}: steps ran for a run that does not exist")
        return
    verdict.statuses[run.status] += 1
    if ("start", "") in unknown and ("start", "") not in acked:
        verdict.unknown_took_effect["start"] += 1
    if run.status not in SETTLED:
        busy = run.status in ("RUNNING", "WAITING", "PENDING")
        target = verdict.unsettled if busy else verdict.other
        target.append(f"{run_id}: {run.status} after the last restart {run.error}".rstrip())
    for gate in LOAD_GATES:
        _check_gate(verdict, run_id, run, gate, acked.get(("resume", gate)), unknown)
    for step in LOAD_STEPS:
        _check_step(verdict, run_id, run.steps.get(step), step, lines, pids)


def _check_gate(
    verdict: Verdict,
    run_id: str,
    run: StoredRun,
    gate: str,
    acked: Call | None,
    unknown: dict[tuple[str, str], Call],
) -> None:
    step = run.steps.get(gate)
    got = step.resume_payload if step is not None else None
    completed = step is not None and step.status == "SUCCESS"
    done_value = (step.output or {}).get("value") if completed and step else None
    if acked is not None:
        if got != {"value": acked.value} or not completed or done_value != acked.value:
            state = step.status if step else "absent"
            verdict.lost.append(
                f"{run_id}: ResumeRun {gate}={acked.value} was acknowledged; the gate is"
                f" {state} with resume data {got} and output value {done_value}"
            )
        return
    maybe = unknown.get(("resume", gate))
    if got is None:
        return
    if maybe is None or got != {"value": maybe.value}:
        verdict.other.append(f"{run_id}: {gate} has resume data {got} that no call sent")
    elif completed:
        verdict.unknown_took_effect["resume"] += 1


def _check_step(
    verdict: Verdict,
    run_id: str,
    step: StoredStep | None,
    name: str,
    all_lines: list[Line],
    pids: list[int],
) -> None:
    lines = [line for line in all_lines if line.step == name]
    if step is None or step.status != "SUCCESS":
        if lines:
            state = step.status if step else "absent"
            verdict.lost.append(
                f"{run_id}: {name} ran {len(lines)} line(s) but is {state}: its effect was lost"
            )
        return
    token = (step.output or {}).get("token")
    where = f"{run_id}: {name}"
    done = [line for line in lines if line.kind == "done" and line.token == token]
    if len(done) != 1:
        verdict.duplicates.append(f"{where} committed token {token} has {len(done)} done lines")
        return
    tail = [(line.kind, line.token) for line in lines[-2:]]
    if tail != [("start", token), ("done", token)]:
        verdict.duplicates.append(f"{where} ran again after its completion was committed")
    starts = Counter(line.pid for line in lines if line.kind == "start")
    for pid, n in starts.items():
        if n > 1:
            verdict.duplicates.append(f"{where} ran {n} times in one server process ({pid})")
    killed = set(pids[:-1])
    for line in lines:
        if line.kind != "start" or line.token == token:
            continue
        if line.pid not in killed:
            verdict.duplicates.append(f"{where} re-ran in process {line.pid}, never killed")
        elif any(d.kind == "done" and d.token == line.token for d in lines):
            verdict.reruns_uncommitted += 1
        else:
            verdict.reruns_cut += 1
