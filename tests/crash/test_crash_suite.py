"""The crash suite in its bounded form (issue 8, item 1; STYLE.md rules 21 and 23).

For each seed in a fixed list, clients start and resume `crash-load` runs against a real
server process that is killed with SIGKILL 8 times at random (seeded) moments and restarted;
the checker then proves from GetRun after the last restart, the client's call log and the
steps' side-effect lines that no acknowledged start or resume was lost, no completed step
ran twice, and every run settled. The long form is `python -m tests.crash --kills 200`.

The checker's own tests feed it histories with a lost start, a lost resume, a step run twice
and an unsettled run, so a checker that could not fail would be caught.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash.checker import Call, Line, StoredRun, StoredStep, check
from tests.crash.driver import LoadConfig, run_load

SEEDS = [11, 23, 37]
KILLS = 8


@pytest.mark.parametrize("seed", SEEDS)
async def test_no_acknowledged_call_is_lost_and_no_completed_step_reruns_across_sigkills(
    seed: int, tmp_path: Path
) -> None:
    """8 SIGKILLs at seeded random moments under a load of starts and resumes: zero lost
    acknowledged operations, zero duplicate step executions, every run SUCCESS or SUSPENDED
    after the last restart; and the load really was exercised (calls acknowledged, steps
    interrupted and runs finished)."""
    print(f"crash suite seed={seed} (files in {tmp_path})")
    config = LoadConfig(seed=seed, kills=KILLS, workers=4, uptime=(0.15, 0.8))
    result = await run_load(tmp_path, config)
    verdict = check(result.calls, result.runs, result.logs, result.pids, result.stored_ids)
    summary = verdict.summary(seed, result.kills, len(result.pids))
    print(summary)
    assert verdict.violations == [], f"seed={seed}: {summary}\n" + "\n".join(verdict.violations)
    assert len(result.pids) == KILLS + 1
    assert verdict.calls["start ok"] > 0 and verdict.calls["resume ok"] > 0, summary
    assert verdict.statuses["SUCCESS"] > 0, summary


# -- the checker can fail ---------------------------------------------------------------


def _done(token: str, value: int | None = None) -> StoredStep:
    output = {"token": token, **({"value": value} if value is not None else {})}
    resume = {"value": value} if value is not None else None
    return StoredStep("SUCCESS", output, resume)


def _lines(run_id: str, *executions: tuple[str, str, int, bool]) -> list[Line]:
    """(step, token, pid, finished) -> start and (if finished) done lines, in order."""
    out = []
    for step, token, pid, finished in executions:
        out.append(Line("start", run_id, step, token, pid))
        if finished:
            out.append(Line("done", run_id, step, token, pid))
    return out


def _finished_run() -> StoredRun:
    steps = {"one": _done("a"), "gate1": _done("b", 7), "two": _done("c")}
    steps |= {"gate2": _done("d", 8), "three": _done("e")}
    return StoredRun("SUCCESS", steps)


FINISHED = [("one", "a", 1, True), ("gate1", "b", 1, True), ("two", "c", 1, True)]
FINISHED += [("gate2", "d", 1, True), ("three", "e", 1, True)]
ACKED = [
    Call("start", "r", outcome="ok"),
    Call("resume", "r", "gate1", 7, outcome="ok"),
    Call("resume", "r", "gate2", 8, outcome="ok"),
]


def test_the_checker_accepts_a_clean_history_with_a_step_rerun_after_a_kill() -> None:
    """A step that was cut short by a kill in process 1 and completed in process 2 is not a
    duplicate: it is counted as a re-run of the step in flight."""
    lines = _lines("r", ("one", "x", 1, False), *[(s, t, 2, f) for s, t, _, f in FINISHED])
    verdict = check(ACKED, {"r": _finished_run()}, {"r": lines}, pids=[1, 2])
    assert verdict.violations == []
    assert verdict.reruns_cut == 1


def test_the_checker_reports_a_lost_start_and_a_lost_resume() -> None:
    """An acknowledged start whose run is missing, and an acknowledged resume whose gate is
    still waiting, are lost operations."""
    waiting = StoredRun("SUSPENDED", {"one": _done("a"), "gate1": StoredStep("SUSPENDED")})
    calls = [*ACKED[:2], Call("start", "gone", outcome="ok")]
    lines = _lines("r", ("one", "a", 1, True))
    verdict = check(calls, {"r": waiting, "gone": None}, {"r": lines}, pids=[1])
    assert len(verdict.lost) == 2, verdict.lost


def test_the_checker_reports_a_completed_step_that_ran_again() -> None:
    """A step that ran again after its completion was committed, or twice in one process
    that was never killed, is a duplicate execution."""
    again = _lines("r", *FINISHED, ("two", "z", 1, True))
    verdict = check(ACKED, {"r": _finished_run()}, {"r": again}, pids=[1])
    assert verdict.duplicates, verdict


def test_the_checker_reports_runs_left_running_and_runs_nobody_started() -> None:
    """A run still RUNNING after the last restart is unsettled; a run in the store that no
    client started is reported too."""
    running = StoredRun("RUNNING", {"one": _done("a")})
    lines = _lines("r", ("one", "a", 1, True))
    verdict = check(ACKED[:1], {"r": running}, {"r": lines}, pids=[1], stored_ids={"r", "x"})
    assert len(verdict.unsettled) == 1 and len(verdict.other) == 1, verdict
