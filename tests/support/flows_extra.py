"""More control-flow shapes for the control-flow, foreach and lifecycle tests: the ones
`flows.py` lacks. Steps and conditions append to the file named in the input (`log`), so a
test can count how often each ran."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tests.support.flows import Amount, Approve, asker
from tests.support.workflows import record
from waystation import StepContext, create_step, create_workflow


class Note(BaseModel):
    note: str


def _counting(arm: str, holds: bool) -> Any:
    def condition(ctx: StepContext) -> bool:
        record(ctx.input_data["log"], f"cond:{arm}")
        return holds

    return condition


async def _after(ctx: StepContext) -> dict[str, Any]:
    return {"after": ctx.input_data}


async def _never(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], "never")
    return {"never": True}


# branch whose conditions log "cond:<arm>" when evaluated: "ask" holds (its step suspends,
# label "ask-label"), "skip" does not -> after
counted_branch = (
    create_workflow(id="counted-branch")
    .branch(
        [
            (_counting("ask", True), asker("ask", "ask-label")),
            (_counting("skip", False), create_step(id="never", execute=_never)),
        ],
        id="route",
    )
    .then(create_step(id="after", execute=_after))
    .commit()
)

# branch whose two arms both hold and both suspend -> after
both_arms = (
    create_workflow(id="both-arms")
    .branch([(lambda ctx: True, asker("left-arm")), (lambda ctx: True, asker("right-arm"))])
    .then(create_step(id="after", execute=_after))
    .commit()
)


async def _check(ctx: StepContext) -> dict[str, Any]:
    item = ctx.input_data
    if item.get("ask") and ctx.resume_data is None:
        ctx.suspend({"check": item["name"]}, resume_label=f"check-{item['name']}")
    return {"name": item["name"], "ok": ctx.resume_data.ok if ctx.resume_data else None}


_item_flow = (
    create_workflow(id="item-flow")
    .then(create_step(id="check", resume_schema=Approve, execute=_check))
    .commit()
)

# foreach (concurrency 2) whose body is the nested workflow item-flow [check]; items with
# ask suspend at ["item-flow", "check"] with label check-<name>
item_flows = create_workflow(id="item-flows").foreach(_item_flow, concurrency=2).commit()

_group_flow = (
    create_workflow(id="group-flow")
    .foreach(create_step(id="check", resume_schema=Approve, execute=_check), concurrency=2)
    .commit()
)

# a foreach (concurrency 3) over groups, each the nested workflow group-flow, itself a
# foreach (concurrency 2) of check over the group's items: item j of group i suspends at
# ["group-flow", "check"] with label check-<name>, in the record group-flow#i.check#j
group_flows = create_workflow(id="group-flows").foreach(_group_flow, concurrency=3).commit()


async def _ask_round(ctx: StepContext) -> dict[str, Any]:
    total = ctx.input_data.get("total", 0)
    if ctx.resume_data is None:
        ctx.suspend({"total_so_far": total})
    return {"total": total + ctx.resume_data.amount}


_round = (
    create_workflow(id="round")
    .then(create_step(id="ask-round", resume_schema=Amount, execute=_ask_round))
    .commit()
)

# dountil whose body is the nested workflow round [ask-round]: asks for an amount on every
# iteration until the total reaches 10
round_until = (
    create_workflow(id="round-until")
    .dountil(_round, lambda ctx: bool(ctx.input_data["total"] >= 10))
    .commit()
)


def _keeper(step_id: str) -> Any:
    async def execute(ctx: StepContext) -> dict[str, Any]:
        if ctx.resume_data is None:
            await ctx.set_state({step_id: ctx.state.get(step_id, 0) + 1})
            ctx.suspend({"state": ctx.state})
        await ctx.set_state({f"{step_id}-resumed": ctx.resume_data.note})
        return {"state": ctx.state, "request_context": ctx.request_context}

    return create_step(id=step_id, resume_schema=Note, execute=execute)


# parallel keep-a, keep-b: each bumps its own state key and suspends; on resume each
# records its note in state and returns the state and request context it saw
state_pair = (
    create_workflow(id="state-pair")
    .parallel([_keeper("keep-a"), _keeper("keep-b")])
    .then(create_step(id="after", execute=_after))
    .commit()
)


async def _wrote(ctx: StepContext) -> Any:
    record(ctx.input_data["log"], "woke")
    return ctx.input_data


# sleep_until a moment long past (wakes at once) -> woke
wake_past = (
    create_workflow(id="wake-past")
    .sleep_until(datetime(2000, 1, 1, tzinfo=UTC), id="until")
    .then(create_step(id="woke", execute=_wrote))
    .commit()
)


async def _patient(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], "waiting")
    try:
        await asyncio.sleep(ctx.input_data["seconds"])
    except asyncio.CancelledError:
        record(ctx.input_data["log"], "saw-cancel")
        raise
    record(ctx.input_data["log"], "finished")
    return {}


# like interruptible, but records "waiting" once the step is inside its wait, so a test
# can cancel exactly while the step runs
patient = create_workflow(id="patient").then(create_step(id="wait", execute=_patient)).commit()


async def _tick(ctx: StepContext) -> dict[str, Any]:
    # The body sees how many iterations completed before this one.
    record(ctx.input_data["log"], f"body:{ctx.iteration_count}")
    return {**ctx.input_data, "ticks": ctx.input_data.get("ticks", 0) + 1}


async def _tock(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], f"inner:{ctx.iteration_count}")
    return dict(ctx.input_data)


def _third(ctx: StepContext) -> bool:
    # The condition sees the body's output and how many iterations have completed.
    record(ctx.input_data["log"], f"cond:{ctx.iteration_count}:{ctx.input_data['ticks']}")
    return bool(ctx.input_data["ticks"] >= 3)


# dountil tick until three ticks; the body logs "body:<iteration_count>", the condition
# "cond:<iteration_count>:<ticks>"
thrice = (
    create_workflow(id="thrice").dountil(create_step(id="tick", execute=_tick), _third).commit()
)

# the same loop with a nested workflow as its body, whose step sits one level down (and a
# nested workflow inside that, two levels down): both log the iterations done before theirs
_ticker = (
    create_workflow(id="ticker")
    .then(create_step(id="tick", execute=_tick))
    .then(create_workflow(id="deeper").then(create_step(id="tock", execute=_tock)).commit())
    .commit()
)
thrice_nested = create_workflow(id="thrice-nested").dountil(_ticker, _third).commit()


async def _breaks(ctx: StepContext) -> None:
    raise RuntimeError("this branch breaks")


# inner-breaks [breaks (fails, no retries)] nested in nested-breaks: the run fails
inner_breaks = (
    create_workflow(id="inner-breaks")
    .then(create_step(id="breaks", retries=0, execute=_breaks))
    .commit()
)
nested_breaks = create_workflow(id="nested-breaks").then(inner_breaks).commit()


# parallel: one branch suspends, the other fails (no retries) -> the run fails
ask_and_break = (
    create_workflow(id="ask-and-break")
    .parallel([asker("asks"), create_step(id="breaks", retries=0, execute=_breaks)])
    .commit()
)

_deep = create_workflow(id="deep").then(asker("deep-ask")).commit()
_mid = create_workflow(id="mid").parallel([_deep, asker("mid-ask")]).commit()

# nested mid [parallel: nested deep [deep-ask], mid-ask] -> after: suspends at
# mid.deep.deep-ask and mid.mid-ask
deep_outer = (
    create_workflow(id="deep-outer")
    .then(_mid)
    .then(create_step(id="after", execute=_after))
    .commit()
)


async def _unstorable(ctx: StepContext) -> dict[str, Any]:
    await ctx.set_state({"thing": object()})  # JSON cannot hold it
    return {"stored": True}


# one step that puts a value JSON cannot hold into the workflow state (no retries)
unstorable_state = (
    create_workflow(id="unstorable-state")
    .then(create_step(id="unstorable", retries=0, execute=_unstorable))
    .commit()
)


async def twice_failing(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], f"attempt:{ctx.retry_count}")
    if ctx.retry_count < 2:
        raise RuntimeError("transient failure")
    return {"retry_count": ctx.retry_count}


# the workflow's retry_config in Mastra's shape (a mapping) retries a step that fails twice
workflow_retries = (
    create_workflow(id="workflow-retries", retry_config={"attempts": 2, "delay": 0.01})
    .then(create_step(id="twice-failing", execute=twice_failing))
    .commit()
)

# the same with half a second between attempts
spaced_retries = (
    create_workflow(id="spaced-retries", retry_config={"attempts": 2, "delay": 0.5})
    .then(create_step(id="twice-failing", execute=twice_failing))
    .commit()
)

_no_retry_config = (
    create_workflow(id="no-retry-config")
    .then(create_step(id="twice-failing", execute=twice_failing))
    .commit()
)

# the nested workflow no-retry-config [twice-failing] has no retry_config of its own; the
# top workflow's is {attempts 2, delay 0.3}
inherited_retries = (
    create_workflow(id="inherited-retries", retry_config={"attempts": 2, "delay": 0.3})
    .then(_no_retry_config)
    .commit()
)


class Greeting(BaseModel):
    greeting: str


async def _wrong_output(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], f"attempt:{ctx.retry_count}")
    return {"not_greeting": ctx.retry_count}


# a step whose output never matches its output schema (one retry)
wrong_output = (
    create_workflow(id="wrong-output")
    .then(create_step(id="greet", output_schema=Greeting, retries=1, execute=_wrong_output))
    .commit()
)


async def _wrong_payload(ctx: StepContext) -> None:
    ctx.suspend({"nope": 1})


# a step whose suspend payload never matches its suspend schema (no retries)
wrong_payload = (
    create_workflow(id="wrong-payload")
    .then(create_step(id="ask", suspend_schema=Greeting, retries=0, execute=_wrong_payload))
    .commit()
)


async def _bail_on_one(ctx: StepContext) -> Any:
    if ctx.input_data == 1:
        ctx.bail({"bailed_at": 1})
    return ctx.input_data


async def _three(ctx: StepContext) -> list[int]:
    return [0, 1, 2]


async def _bailer(ctx: StepContext) -> None:
    ctx.bail({"bailed": True})


# foreach over [0, 1, 2] whose item 1 bails: the run succeeds with the bail's value
foreach_bail = (
    create_workflow(id="foreach-bail")
    .then(create_step(id="items", execute=_three))
    .foreach(create_step(id="item", execute=_bail_on_one))
    .commit()
)

# parallel: "quit" bails, "sibling" suspends (label "sibling-label")
parallel_bail = (
    create_workflow(id="parallel-bail")
    .parallel([create_step(id="quit", execute=_bailer), asker("sibling", "sibling-label")])
    .commit()
)

_bailing_inner = (
    create_workflow(id="bailing-inner")
    .parallel([create_step(id="quit", execute=_bailer), asker("inner-ask")])
    .commit()
)

# a nested workflow whose parallel bails and suspends -> outer-ask: the bail ends only the
# nested workflow, and the run goes on to suspend at outer-ask
nested_bail = (
    create_workflow(id="nested-bail").then(_bailing_inner).then(asker("outer-ask")).commit()
)


async def _raiser(ctx: StepContext) -> None:
    raise RuntimeError("no")


# parallel: "broken" raises, "waiting" suspends (label "waiting-label"): the run fails
parallel_fail = (
    create_workflow(id="parallel-fail")
    .parallel([asker("waiting", "waiting-label"), create_step(id="broken", execute=_raiser)])
    .commit()
)


async def _abort_if_asked(ctx: StepContext) -> dict[str, Any]:
    if ctx.input_data.get("abort"):
        ctx.abort()
    return {"kept": True}


# a foreach (concurrency 1) over the nested workflow abort-flow [aborter]: an item with
# abort cancels the run from inside
abort_items = (
    create_workflow(id="abort-items")
    .foreach(
        create_workflow(id="abort-flow")
        .then(create_step(id="aborter", execute=_abort_if_asked))
        .commit()
    )
    .commit()
)


class LogN(BaseModel):
    log: str
    n: int


def _inc(step_id: str) -> Any:
    """A step that logs its id and adds one to n."""

    async def execute(ctx: StepContext) -> dict[str, Any]:
        record(ctx.input_data.log, step_id)
        return {"log": ctx.input_data.log, "n": ctx.input_data.n + 1}

    return create_step(id=step_id, input_schema=LogN, execute=execute)


async def _join(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["ba"]["log"], "join")
    return {arm: int(output["n"]) for arm, output in sorted(ctx.input_data.items())}


# a branch of ba (+1), the nested workflow bw [xa, xb] (+2) and bb (never chosen), then
# join -> {ba: n + 1, bw: n + 2}; input {log, n}
travel_branch = (
    create_workflow(id="travel-branch")
    .branch(
        [
            (lambda ctx: True, _inc("ba")),
            (
                lambda ctx: True,
                create_workflow(id="bw").then(_inc("xa")).then(_inc("xb")).commit(),
            ),
            (lambda ctx: False, _inc("bb")),
        ]
    )
    .then(create_step(id="join", execute=_join))
    .commit()
)

# seed (+1), then the nested workflow body [la, lb] (+2) while n < 6, then fin (+1): from
# n = 0, 1 -> 3 -> 5 -> 7 -> 8; input {log, n}
travel_loop = (
    create_workflow(id="travel-loop")
    .then(_inc("seed"))
    .dowhile(
        create_workflow(id="body").then(_inc("la")).then(_inc("lb")).commit(),
        lambda ctx: ctx.input_data["n"] < 6,
    )
    .then(_inc("fin"))
    .commit()
)


async def _slow_once_resumed(ctx: StepContext) -> dict[str, Any]:
    if ctx.resume_data is None:
        ctx.suspend({"asked": "slow"})
    await asyncio.sleep(2)
    return {"step": "slow", "ok": ctx.resume_data.ok}


# parallel slow (suspends; once resumed, works 2 s) and fast (suspends, label fast-label)
slow_and_fast = (
    create_workflow(id="slow-and-fast")
    .parallel(
        [
            create_step(id="slow", resume_schema=Approve, execute=_slow_once_resumed),
            asker("fast", "fast-label"),
        ]
    )
    .commit()
)


async def _first_of_two(ctx: StepContext) -> dict[str, Any]:
    return {"from": "first"}


_first_step = create_step(id="first-of-two", execute=_first_of_two)


async def _second_of_two(ctx: StepContext) -> dict[str, Any]:
    return {
        "init": ctx.get_init_data(),
        "by_step": ctx.get_step_result(_first_step),
        "by_id": ctx.get_step_result("first-of-two"),
        "input": ctx.input_data,
    }


# first-of-two -> second-of-two, which returns what the context tells it of the run
context_reads = (
    create_workflow(id="context-reads")
    .then(_first_step)
    .then(create_step(id="second-of-two", execute=_second_of_two))
    .commit()
)

# first-of-two -> the nested workflow reads-first [second-of-two]: the context finds
# first-of-two though it is a step of the top workflow
nested_context_reads = (
    create_workflow(id="nested-context-reads")
    .then(_first_step)
    .then(
        create_workflow(id="reads-first")
        .then(create_step(id="second-of-two", execute=_second_of_two))
        .commit()
    )
    .commit()
)


class Limits(BaseModel):
    hits: int = 0
    limit: int = 3


async def _pokes_state(ctx: StepContext) -> dict[str, Any]:
    ctx.state["hits"] = "not a number"  # a copy: changes nothing
    ctx.set_state({"hits": ctx.state["hits"] + 1})
    return ctx.state


# state-poked: writes into ctx.state (a copy), then adds one to hits with set_state
state_poked = (
    create_workflow(id="state-poked", state_schema=Limits)
    .then(create_step(id="pokes", retries=0, execute=_pokes_state))
    .commit()
)


def _first_time(marker: Path) -> bool:
    first = not marker.exists()
    marker.touch()
    return first


async def _fails_the_first_time(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], "flaky")
    if _first_time(Path(ctx.input_data["log"] + ".ran")):
        raise RuntimeError("fails the first time")
    return dict(ctx.input_data)


def logs(word: str, output: dict[str, Any] | None = None) -> Any:
    """A step function that records `word` to the input's log and returns `output` (the
    input itself when None)."""

    async def execute(ctx: StepContext) -> dict[str, Any]:
        record(ctx.input_data["log"], word)
        return dict(ctx.input_data) if output is None else output

    return execute


# fails-once: flaky-first (no retries) fails the first time it runs for a log, then
# after-flaky; input {log}
fails_once = (
    create_workflow(id="fails-once")
    .then(create_step(id="flaky-first", retries=0, execute=_fails_the_first_time))
    .then(create_step(id="after-flaky", execute=logs("after", {"done": True})))
    .commit()
)


async def _says(ctx: StepContext) -> dict[str, Any]:
    return {"not_greeting": ctx.input_data}


# output-refused: says returns what the workflow's output_schema Greeting refuses
output_refused = (
    create_workflow(id="output-refused", output_schema=Greeting)
    .then(create_step(id="says", execute=_says))
    .commit()
)

_wants_numbers = (
    create_workflow(id="wants-numbers", input_schema=LogN)
    .then(create_step(id="takes", execute=logs("takes")))
    .commit()
)

# nested-input-checked: the nested workflow wants-numbers [takes (logs "takes"; no schema
# of its own)] checks its input {log, n} against its input_schema LogN
nested_input_checked = create_workflow(id="nested-input-checked").then(_wants_numbers).commit()


_naps_a_second = create_workflow(id="naps-a-second").sleep(1, id="short-nap").commit()

# parallel: "asks-beside" suspends (label "beside-label") while the nested workflow
# naps-a-second sleeps 1 s: the run is WAITING until the nap ends, then SUSPENDED
ask_beside_a_nap = (
    create_workflow(id="ask-beside-a-nap")
    .parallel([asker("asks-beside", "beside-label"), _naps_a_second])
    .commit()
)


async def _aborts(ctx: StepContext) -> None:
    ctx.abort()


# parallel: "quit" bails, "broken" raises: the failure outranks the bail
bail_and_break = (
    create_workflow(id="bail-and-break")
    .parallel([create_step(id="quit", execute=_bailer), create_step(id="broken", execute=_raiser)])
    .commit()
)

# parallel: "broken" raises, "stops" aborts: the failure outranks the abort
break_and_abort = (
    create_workflow(id="break-and-abort")
    .parallel([create_step(id="broken", execute=_raiser), create_step(id="stops", execute=_aborts)])
    .commit()
)


async def _empty_label(ctx: StepContext) -> None:
    ctx.suspend({"asked": True}, resume_label="")


# a step that suspends with an empty resume label
empty_label = (
    create_workflow(id="empty-label")
    .then(create_step(id="unlabeled", resume_schema=Approve, execute=_empty_label))
    .commit()
)


async def _bare_key_error(ctx: StepContext) -> None:
    raise KeyError()  # str() of it is ""


# a step that raises a KeyError without a message
bare_key_error = (
    create_workflow(id="bare-key-error")
    .then(create_step(id="lookup", execute=_bare_key_error))
    .commit()
)


async def _bare_suspend(ctx: StepContext) -> dict[str, Any]:
    if ctx.resume_data is None:
        ctx.suspend()
    return {"approved": ctx.resume_data.ok}


# a step that suspends with no payload
bare_suspend = (
    create_workflow(id="bare-suspend")
    .then(create_step(id="bare", resume_schema=Approve, execute=_bare_suspend))
    .commit()
)


async def _busy(ctx: StepContext) -> dict[str, Any]:
    record(ctx.input_data["log"], "busy-start")
    await asyncio.sleep(ctx.input_data["seconds"])
    record(ctx.input_data["log"], "busy-end")
    return {"busy": "done"}


async def _keep_input(ctx: StepContext) -> dict[str, Any]:
    return {"after": ctx.input_data}


# parallel ask (suspends at once, label ask-label; logs "ask" once resumed) and busy (works
# `seconds`, logging busy-start and busy-end) -> after: output {"after": {ask, busy}}
ask_while_busy = (
    create_workflow(id="ask-while-busy")
    .parallel([asker("ask", "ask-label"), create_step(id="busy", execute=_busy)])
    .then(create_step(id="after", execute=_keep_input))
    .commit()
)

# the same, but the busy branch then sleeps a minute (durably): the run goes WAITING
ask_while_busy_then_asleep = (
    create_workflow(id="ask-while-busy-then-asleep")
    .parallel(
        [
            asker("ask"),
            create_workflow(id="drowsy")
            .then(create_step(id="busy", execute=_busy))
            .sleep(60, id="nap")
            .commit(),
        ]
    )
    .commit()
)

# parallel "approve" (suspends, label approve-label; logs "approve" once resumed) and the
# nested workflow reminder [remind-nap sleeps 2 s, then remind logs "remind"] -> after:
# output {"after": {approve, reminder}}; input {log}. The run is WAITING while the nap lasts
approve_or_remind = (
    create_workflow(id="approve-or-remind")
    .parallel(
        [
            asker("approve", "approve-label"),
            create_workflow(id="reminder")
            .sleep(2, id="remind-nap")
            .then(create_step(id="remind", execute=logs("remind", {"reminded": True})))
            .commit(),
        ]
    )
    .then(create_step(id="after", execute=_keep_input))
    .commit()
)


async def _item_asks_or_works(ctx: StepContext) -> dict[str, Any]:
    item = {**ctx.input_data, "i": int(ctx.input_data["i"])}  # (a number arrives as a float)
    if "seconds" not in item:  # asks
        if ctx.resume_data is None:
            ctx.suspend({"item": item["i"]})
        record(item["log"], f"asked:{item['i']}")
        return {"i": item["i"], "ok": ctx.resume_data.ok}
    record(item["log"], f"busy-start:{item['i']}")
    await asyncio.sleep(item["seconds"])
    record(item["log"], f"busy-end:{item['i']}")
    return {"i": item["i"]}


# foreach over [{log, i}, ...] at concurrency 2: an item without "seconds" suspends at once
# (logs asked:<i> once resumed), one with "seconds" works that long (busy-start/end:<i>)
items_ask_while_busy = (
    create_workflow(id="items-ask-while-busy")
    .foreach(
        create_step(id="item", resume_schema=Approve, execute=_item_asks_or_works),
        concurrency=2,
    )
    .commit()
)
