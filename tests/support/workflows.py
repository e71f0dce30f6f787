"""Workflows for tests. Steps record their side effects by appending a line to the file
named in the input (`log`), so tests can count how often each step ran, also across
processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, computed_field

from waystation import StepContext, create_step, create_workflow


class Logged(BaseModel):
    log: str
    seconds: float = 0.0


class Value(BaseModel):
    value: int


class Ok(BaseModel):
    ok: bool


class Count(BaseModel):
    n: int = Field(ge=0)


def record(log: str, line: str) -> None:
    with Path(log).open("a") as f:
        f.write(line + "\n")


def lines(log: str | Path) -> list[str]:
    path = Path(log)
    return path.read_text().splitlines() if path.exists() else []


async def _one(ctx: StepContext) -> Logged:
    record(ctx.input_data.log, "one")
    return ctx.input_data


async def _gate(ctx: StepContext) -> dict[str, object]:
    if ctx.resume_data is None:
        ctx.suspend({"waiting_for": "value"}, resume_label="gate")
    if ctx.input_data.seconds:
        await asyncio.sleep(ctx.input_data.seconds)
    record(ctx.input_data.log, "gate")
    return {"log": ctx.input_data.log, "value": ctx.resume_data.value}


async def _two(ctx: StepContext) -> dict[str, object]:
    record(ctx.input_data["log"], "two")
    return {"value": ctx.input_data["value"] + 1}


one = create_step(id="one", input_schema=Logged, output_schema=Logged, execute=_one)
gate = create_step(id="gate", input_schema=Logged, resume_schema=Value, execute=_gate)
two = create_step(id="two", execute=_two)

# one -> gate (suspends; resume {value}) -> two: returns {value: value + 1}
counted = create_workflow(id="counted", input_schema=Logged).then(one).then(gate).then(two).commit()


async def _a(ctx: StepContext) -> Logged:
    if ctx.resume_data is None:
        ctx.suspend({"step": "a"})
    record(ctx.input_data.log, "a")
    return ctx.input_data


async def _b(ctx: StepContext) -> dict[str, object]:
    if ctx.resume_data is None:
        ctx.suspend({"step": "b"}, resume_label="inner-b")
    record(ctx.input_data.log, "b")
    return {"log": ctx.input_data.log, "n": ctx.resume_data.n}


async def _last(ctx: StepContext) -> dict[str, object]:
    record(ctx.input_data["log"], "last")
    return {"n": ctx.input_data["n"], "done": True}


inner = (
    create_workflow(id="inner", input_schema=Logged)
    .then(create_step(id="a", input_schema=Logged, resume_schema=Ok, execute=_a))
    .then(create_step(id="b", input_schema=Logged, resume_schema=Count, execute=_b))
    .commit()
)

# first -> inner [a (suspends; resume {ok}) -> b (suspends; resume {n >= 0})] -> last
nested_counted = (
    create_workflow(id="nested-counted", input_schema=Logged)
    .then(create_step(id="first", input_schema=Logged, output_schema=Logged, execute=_one))
    .then(inner)
    .then(create_step(id="last", execute=_last))
    .commit()
)


async def _slow(ctx: StepContext) -> dict[str, object]:
    await asyncio.sleep(ctx.input_data.seconds)
    record(ctx.input_data.log, "slow")
    return {"slept": ctx.input_data.seconds}


# slow: sleeps `seconds`, then records "slow"
slow = (
    create_workflow(id="slow", input_schema=Logged)
    .then(create_step(id="slow", input_schema=Logged, execute=_slow))
    .commit()
)


async def _remember(ctx: StepContext) -> dict[str, object]:
    if ctx.resume_data is None:
        await ctx.set_state({"count": ctx.state.get("count", 0) + 1})
        ctx.suspend({"state": ctx.state})
    return {
        "state": ctx.state,
        "request_context": ctx.request_context,
        "resume": ctx.resume_data,
        "suspend_data": ctx.suspend_data,
    }


# remember: sets state {count: +1}, suspends; on resume returns state, request context,
# resume data and suspend data as it saw them
remember = (
    create_workflow(id="remember").then(create_step(id="remember", execute=_remember)).commit()
)


async def _fail(ctx: StepContext) -> None:
    raise ValueError(f"boom on attempt {ctx.retry_count}")


# fails: one step that always raises ValueError, retried twice
fails = (
    create_workflow(id="fails").then(create_step(id="explode", retries=2, execute=_fail)).commit()
)


async def _deadline(ctx: StepContext) -> dict[str, object]:
    if ctx.resume_data is None:
        ctx.suspend(
            {"waiting": True},
            timeout=ctx.input_data.seconds,
            on_timeout="fail" if ctx.input_data.log == "fail" else {"value": -1},
        )
    return {"value": ctx.resume_data.value}


# expiring: suspends with a timeout of `seconds`; when it passes, the run fails (input log
# "fail") or the step resumes with {"value": -1}
expiring = (
    create_workflow(id="expiring", input_schema=Logged)
    .then(create_step(id="decide", input_schema=Logged, resume_schema=Value, execute=_deadline))
    .commit()
)


class Observed(BaseModel):
    db: str
    seen: dict[str, list[str]] = Field(default_factory=dict)


def _statuses(db: str, run_id: str) -> list[str]:
    """The step records of `run_id` as committed in the SQLite file `db`: "path=status"."""
    import json
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT path, record FROM steps WHERE run_id = ?", (run_id,))
        return sorted(f"{path}={json.loads(record)['status']}" for path, record in rows)
    finally:
        conn.close()


def _observer(name: str) -> Any:
    async def observe(ctx: StepContext) -> Observed:
        data: Observed = ctx.input_data
        seen = {**data.seen, name: _statuses(data.db, ctx.run_id)}
        return Observed(db=data.db, seen=seen)

    return create_step(id=name, input_schema=Observed, output_schema=Observed, execute=observe)


# observed: three steps, each reading what the store (the SQLite file named in the input)
# holds for the run when its code starts: every earlier transition must be committed
observed = (
    create_workflow(id="observed", input_schema=Observed, output_schema=Observed)
    .then(_observer("first"))
    .then(_observer("second"))
    .then(_observer("third"))
    .commit()
)


async def _inflate(ctx: StepContext) -> dict[str, str]:
    return {"blob": "x" * int(ctx.input_data["bytes"])}


# inflate: a step whose output is `bytes` long, from a small input
inflate = create_workflow(id="inflate").then(create_step(id="inflate", execute=_inflate)).commit()


async def _deep(ctx: StepContext) -> Any:
    value: Any = "leaf"
    for _ in range(int(ctx.input_data["levels"])):
        value = {"d": value}
    return value


# deep-output: a step whose output nests `levels` objects deep
deep_output = create_workflow(id="deep-output").then(create_step(id="deep", execute=_deep)).commit()


class Uncarried(BaseModel):
    make: str = ""
    """"bigint", "negative-bigint" or "surrogate": the step outputs a value no answer can
    carry."""
    n: int = 0


async def _uncarried(ctx: StepContext) -> Any:
    if ctx.input_data["make"] == "bigint":
        return {"n": 10**400}
    if ctx.input_data["make"] == "negative-bigint":
        return {"n": -(10**400)}
    if ctx.input_data["make"] == "surrogate":
        return {"name": b"caf\xe9".decode("utf-8", "surrogateescape")}  # as os.fsdecode gives
    if ctx.resume_data is None:
        ctx.suspend({"n": ctx.input_data["n"]})
    return {"n": ctx.resume_data.n}


# uncarried: pydantic takes integers past a double's range (from digits in a string), and
# Python strings may hold lone surrogates; neither fits an answer
uncarried = (
    create_workflow(id="uncarried", input_schema=Uncarried)
    .then(create_step(id="carry", resume_schema=Count, execute=_uncarried))
    .commit()
)


# -- models whose JSON is not their field names: aliases and computed fields ---------------


class Zip(BaseModel):
    zip: str = Field(validation_alias="zipCode")


class Quote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: int
    qty: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return self.unit * self.qty


class Receipt(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    order_id: str = Field(alias="orderId")
    city: str = Field(default="?", serialization_alias="cityName")
    quote: Quote


class Tally(BaseModel):
    user_name: str = Field(default="", alias="userName")
    hits: int = 0


async def _receipt(ctx: StepContext) -> Receipt:
    return Receipt(order_id="o-1", city=ctx.input_data.city, quote=Quote(unit=2, qty=3))


async def _confirm(ctx: StepContext) -> dict[str, Any]:
    ctx.set_state({"user_name": "carol"})
    if ctx.resume_data is None:
        ctx.suspend(Quote(unit=ctx.input_data.quote.unit, qty=ctx.input_data.quote.qty))
    ctx.set_state({"hits": ctx.state["hits"] + 1})
    return {
        "order_id": ctx.input_data.order_id,
        "city": ctx.input_data.city,
        "zip": ctx.resume_data.zip,
        "total": ctx.suspend_data.total,
        "state": ctx.state,
    }


# aliased: a Receipt (alias, serialization-only alias, computed field, extra="forbid") is
# the next step's input; it suspends with a computed field and resumes by validation alias
aliased = (
    create_workflow(id="aliased", state_schema=Tally)
    .then(create_step(id="receipt", input_schema=Receipt, output_schema=Receipt, execute=_receipt))
    .then(
        create_step(
            id="confirm",
            input_schema=Receipt,
            suspend_schema=Quote,
            resume_schema=Zip,
            execute=_confirm,
        )
    )
    .commit()
)


class Booking(BaseModel):
    model_config = ConfigDict(strict=True)
    when: datetime
    ident: UUID
    nights: int


async def _book(ctx: StepContext) -> dict[str, Any]:
    booking = ctx.input_data
    if ctx.resume_data is None:
        ctx.suspend({"confirm": str(booking.ident)})
    return {
        "weekday": booking.when.weekday(),
        "nights": booking.nights + ctx.resume_data.nights,
        "types": [type(booking.when).__name__, type(booking.ident).__name__],
    }


# strict: a strict model (ConfigDict(strict=True)) as input and resume schema
strict = (
    create_workflow(id="strict", input_schema=Booking)
    .then(create_step(id="book", input_schema=Booking, resume_schema=Booking, execute=_book))
    .commit()
)


class Dog(BaseModel):
    kind: Literal["dog"]
    barks: bool


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Line(BaseModel):
    sku: str


class Pets(BaseModel):
    pet: Dog | Cat = Field(discriminator="kind")
    either: int | str = 0
    lines: list[Line] = []


# pets: unions in the input schema, for the field paths of their violations
pets = (
    create_workflow(id="pets", input_schema=Pets)
    .then(create_step(id="pet", execute=_remember))
    .commit()
)


_ODD = {"nan": float("nan"), "inf": float("inf"), "huge": 1e300}


async def _odd_suspend(ctx: StepContext) -> None:
    odd = ctx.input_data["odd"]
    if odd == "label":
        ctx.suspend({}, resume_label="l" * 201)
    ctx.suspend({}, timeout=_ODD[odd])


# odd-suspend: suspends with a timeout or a label the run could not keep ({"odd": ...})
odd_suspend = (
    create_workflow(id="odd-suspend")
    .then(create_step(id="odd", resume_schema=Ok, execute=_odd_suspend))
    .commit()
)


class Limited(BaseModel):
    hits: int = 0
    limit: int = 10


async def _sets(ctx: StepContext) -> dict[str, Any]:
    update = ctx.input_data["update"]
    try:
        ctx.set_state(update)
    except ValueError:  # what set_state raises for a refused update
        if ctx.input_data.get("swallow"):
            return {"kept": ctx.state}
        raise
    return {"state": ctx.state}


# state-checked: sets the state to the input's "update" under the state schema Limited
# (hits, limit: ints); with "swallow" the step catches a refused update itself
state_checked = (
    create_workflow(id="state-checked", state_schema=Limited)
    .then(create_step(id="sets", retries=0, execute=_sets))
    .commit()
)

# step-state-checked: the same step under a workflow without a state schema, the step's own
# state_schema Limited checking the update
step_state_checked = (
    create_workflow(id="step-state-checked")
    .then(create_step(id="sets-own", state_schema=Limited, retries=0, execute=_sets))
    .commit()
)


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""


# form: an input schema that refuses unknown keys (each one a violation named by its key)
form = create_workflow(id="form", input_schema=Form).then(one).commit()


async def _hog_loop(ctx: StepContext) -> dict[str, float]:
    time.sleep(ctx.input_data["seconds"])  # noqa: ASYNC251 (holds the loop, as CPU-bound steps do)
    return ctx.input_data


# hog: a step that holds the server's event loop for `seconds` (overload tests)
hog = create_workflow(id="hog").then(create_step(id="hog", execute=_hog_loop)).commit()


async def _tick(ctx: StepContext) -> dict[str, Any]:
    data = ctx.input_data
    return {"i": data["i"] + 1, "n": data["n"], "pad": data["pad"]}


def _ticked_enough(ctx: Any) -> bool:
    return bool(ctx.input_data["i"] >= ctx.input_data["n"])


# chatty: a loop of n iterations whose every output repeats `pad`: many large events
chatty = (
    create_workflow(id="chatty")
    .dountil(create_step(id="tick", execute=_tick), _ticked_enough)
    .commit()
)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails too")


async def _quit(ctx: StepContext) -> None:
    how = ctx.input_data["how"]
    if how == "exit":
        raise SystemExit(2)  # what argparse does on bad arguments
    if how == "interrupt":
        raise KeyboardInterrupt
    raise _Unprintable


def _quitting(ctx: Any) -> bool:
    if ctx.input_data["how"] == "exit":
        raise SystemExit(3)
    return True


# quits: a step that raises SystemExit, KeyboardInterrupt or an exception whose str() fails
quits = create_workflow(id="quits").then(create_step(id="quit", execute=_quit)).commit()


async def _nothing(ctx: StepContext) -> dict[str, Any]:
    return {}


# quits-in-condition: a branch condition that calls sys.exit() when `how` is "exit"
quits_in_condition = (
    create_workflow(id="quits-in-condition")
    .branch([(_quitting, create_step(id="chosen", execute=_nothing))])
    .commit()
)


async def _stubborn(ctx: StepContext) -> dict[str, Any]:
    """A poller that catches everything around its wait, cancellation too, and goes on."""
    until = time.monotonic() + ctx.input_data["seconds"]
    record(ctx.input_data["log"], "polling")
    while time.monotonic() < until:
        with contextlib.suppress(BaseException):  # the mistake this workflow makes on purpose
            await asyncio.sleep(0.05)
    record(ctx.input_data["log"], "gave up")
    return {}


# stubborn: a step that ignores its cancellation for `seconds`, then returns
stubborn = create_workflow(id="stubborn").then(create_step(id="poll", execute=_stubborn)).commit()
