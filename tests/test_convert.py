"""The google.protobuf.Value / Struct <-> JSON conversions of waystation.transport.convert
against the reference they replace, google.protobuf.json_format (MessageToDict, ParseDict),
which the server used to call and which walks messages in pure Python.

Same means the same in every respect: the same result (types, key order, -0.0 and the
float bits included), the same message bytes and field presence after a write, and for a
failure the same exception type, the same text and the same partly written message. Fixed
cases cover the corners (NaN and infinities, ints beyond a double, lone surrogates, keys
that are not text, subclasses, nesting around ParseDict's depth limit); Hypothesis
properties compare the two on random data (seeds: tests/support/fuzzing.py).
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from tests.support import strategies as s
from tests.support.fuzzing import SEEDS, fuzz_settings, run_here
from waystation.api.v1 import message_pb2
from waystation.engine import RunStatus, WorkflowResultData
from waystation.engine.errors import InvalidArgument
from waystation.transport import convert

# -- the reference: the code this module replaced, verbatim --------------------------------


def old_value_to_json(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def old_struct_to_json(value: struct_pb2.Struct, field: str = "") -> dict[str, Any]:
    try:
        return json_format.MessageToDict(value)
    except ValueError as exc:
        raise InvalidArgument(field or "struct", f"not representable as JSON: {exc}") from exc


def old_json_to_value(data: Any, out: struct_pb2.Value) -> None:
    json_format.ParseDict(data, out)


def old_json_to_struct(data: Any, out: struct_pb2.Struct) -> None:
    json_format.ParseDict(data, out)


# -- outcomes, compared exactly -------------------------------------------------------------


def shape(data: Any) -> Any:
    """`data` with every type spelled out, dict order kept and floats by their bits, so
    that == tells 1 from 1.0 and True, 0.0 from -0.0, and {"a", "b"} from {"b", "a"}."""
    kind = type(data)
    if kind is dict:
        return ("dict", [(shape(k), shape(v)) for k, v in data.items()])
    if kind is list:
        return ("list", [shape(item) for item in data])
    if kind is float:
        return ("float", data.hex())
    return (kind.__name__, data)


def failure(exc: BaseException) -> tuple[Any, ...]:
    extra = getattr(exc, "violations", None)
    return ("raised", type(exc), str(exc), repr(extra), exc.__cause__ is not None)


def read_outcome(read: Callable[[Any], Any], message: Any) -> tuple[Any, ...]:
    try:
        return ("ok", shape(read(message)))
    except Exception as exc:
        return failure(exc)


def write_value_outcome(write: Callable[[Any, Any], None], data: Any) -> tuple[Any, ...]:
    """Write into the `output` Value of a StepResult: its bytes also show whether the
    Value became present, and what a failed write left behind."""
    holder = message_pb2.StepResult()
    try:
        write(data, holder.output)
    except Exception as exc:
        return (*failure(exc), holder.SerializeToString(deterministic=True))
    return ("ok", holder.SerializeToString(deterministic=True), holder.output.WhichOneof("kind"))


def write_struct_outcome(write: Callable[[Any, Any], None], data: Any) -> tuple[Any, ...]:
    """As write_value_outcome, into the `details` Struct of a RunError."""
    holder = message_pb2.RunError()
    try:
        write(data, holder.details)
    except Exception as exc:
        return (*failure(exc), holder.SerializeToString(deterministic=True))
    return ("ok", holder.SerializeToString(deterministic=True), holder.HasField("details"))


def assert_reads_as_reference(value: struct_pb2.Value) -> None:
    expected = read_outcome(old_value_to_json, value)
    assert read_outcome(convert.value_to_json, value) == expected
    if value.WhichOneof("kind") == "struct_value":
        struct = value.struct_value
        for field in ("", "initial_state"):
            expected = read_outcome(lambda m, f=field: old_struct_to_json(m, f), struct)
            got = read_outcome(lambda m, f=field: convert.struct_to_json(m, f), struct)
            assert got == expected


def assert_writes_as_reference(data: Any) -> None:
    assert write_value_outcome(convert.json_to_value, data) == write_value_outcome(
        old_json_to_value, data
    )
    assert write_struct_outcome(convert.json_to_struct, data) == write_struct_outcome(
        old_json_to_struct, data
    )


def built(data: Any) -> struct_pb2.Value:
    """A Value holding `data`, built in place (NaN and infinities kept)."""
    out = struct_pb2.Value()
    s.fill_value(out, data)
    return out


# -- fixed cases ---------------------------------------------------------------------------


class Number(enum.IntEnum):
    ONE = 1


class Word(enum.StrEnum):
    A = "a"


class Mapping(dict[str, Any]):
    pass


class Items(list[Any]):
    pass


class Text(str):
    pass


class Real(float):
    pass


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if kind == "dict" else (leaf,) if kind == "tuple" else [leaf]
    return leaf


TYPICAL = {"value": 3, "approved": True, "items": [1, "a", None, {"x": 1.5}]}
NAN, INF = math.nan, math.inf
ODD = object()

WRITE_CASES: dict[str, Any] = {
    "typical": TYPICAL,
    "null": None,
    "true": True,
    "false": False,
    "zero": 0,
    "one": 1,
    "minus-one": -1,
    "int-2^53+1": 2**53 + 1,
    "int-2^64": 2**64,
    "int-1e308": 10**308,
    "int-too-large-for-a-double": 10**309,
    "int-too-small-for-a-double": -(10**400),
    "float": 1.5,
    "minus-zero": -0.0,
    "subnormal": 5e-324,
    "float-max": 1.7976931348623157e308,
    "nan": NAN,
    "infinity": INF,
    "minus-infinity": -INF,
    "empty-text": "",
    "text": "text",
    "unicode": "h\u00e9llo \u2713 \U0001f986 \u202e\ufeff",
    "nul": "a\x00b",
    "lone-surrogate": "\ud800",
    "empty-dict": {},
    "empty-list": [],
    "empty-tuple": (),
    "nested-empties": [[], {}, [[]], {"a": {}}, {"b": []}],
    "tuple": (1, "a", None),
    "unicode-keys": {"\u00e9": 1, "\U0001f986": {"\u202e": [True]}, "": None},
    "key-order": {"b": 1, "a": 2, "c": {"z": 1, "y": 2}},
    "big": {"order": {"lines": [{"sku": f"s{i}", "qty": i, "ok": i % 2 == 0} for i in range(9)]}},
    "nan-inside": {"a": [1, {"b": NAN}]},
    "int-enum": Number.ONE,
    "str-enum": Word.A,
    "dict-subclass": Mapping(a=1),
    "ordered-dict": OrderedDict([("b", 1), ("a", 2)]),
    "list-subclass": Items([1, 2]),
    "str-subclass": Text("t"),
    "float-subclass": Real(2.5),
    "bytes": b"x",
    "set": {1, 2},
    "frozenset": frozenset(),
    "object": ODD,
    "decimal": Decimal("1.5"),
    "complex": 1j,
    "bad-item": [1, ODD],
    "bad-deep": {"a": [1, {"b": b"x"}]},
    "bad-after-good": {"a": 1, "b": {"c": [0, 1, (2, {3})]}},
    "bad-key-int": {1: 2},
    "bad-key-none": {None: 1},
    "bad-key-after-good": {"a": 1, 2: 3},
    "bytes-key": {b"k": 1},
    "surrogate-key": {"\ud800": 1},
    "dotted-key-path": {"a.b": {"[0]": [Decimal(1)]}},
    "surrogate-deep": [{"a": ["\udfff"]}],
    "overflow-deep": {"a": [0, 10**400]},
}


@pytest.mark.parametrize("data", WRITE_CASES.values(), ids=WRITE_CASES.keys())
def test_writes_as_json_format_does(data: Any) -> None:
    assert_writes_as_reference(data)


@pytest.mark.parametrize("kind", ["list", "dict", "tuple"])
@pytest.mark.parametrize("depth", [47, 48, 49, 50, 51, 120])
@pytest.mark.parametrize("leaf", [1, [], {}, b"x"], ids=["number", "list", "dict", "bytes"])
def test_nesting_around_the_depth_limit_is_written_as_json_format_does(
    kind: str, depth: int, leaf: Any
) -> None:
    """ParseDict stops at 100 message levels (a Value and its Struct or ListValue are
    two); too deep wins over a bad type, and the levels already written stay."""
    assert_writes_as_reference(nested(depth, leaf, kind))
    assert_writes_as_reference({"x": nested(depth, leaf, kind)})


def test_a_failure_is_a_parse_error_where_json_format_raises_one() -> None:
    """Callers that catch json_format.ParseError keep working."""
    with pytest.raises(json_format.ParseError, match=r"at Value\.a\[1\]\.b$"):
        convert.json_to_value({"a": [1, {"b": b"x"}]}, struct_pb2.Value())
    with pytest.raises(json_format.ParseError, match="Message too deep"):
        convert.json_to_value(nested(50), struct_pb2.Value())
    with pytest.raises(json_format.ParseError, match="Struct must be in a dict"):
        convert.json_to_struct([], struct_pb2.Struct())  # type: ignore[arg-type]


def test_a_parse_error_chains_nothing() -> None:
    try:
        convert.json_to_value([ODD], struct_pb2.Value())
    except json_format.ParseError as exc:
        assert exc.__cause__ is None and exc.__context__ is None
    else:
        raise AssertionError("no ParseError")


def unset_inside() -> list[struct_pb2.Value]:
    """Values that hold Values with no kind set (MessageToDict reads them as null)."""
    in_list = struct_pb2.Value()
    in_list.list_value.values.add()
    in_list.list_value.values.add().number_value = 2
    in_struct = struct_pb2.Value()
    in_struct.struct_value.fields["a"].SetInParent()
    in_struct.struct_value.fields["b"]  # reading a map entry creates it (unset)
    open_enum = struct_pb2.Value()
    open_enum.null_value = 3  # type: ignore[assignment]  # an unknown NullValue number
    return [struct_pb2.Value(), in_list, in_struct, open_enum]


READ_CASES: dict[str, Any] = {
    key: value
    for key, value in WRITE_CASES.items()
    if isinstance(value, dict | list | str | int | float | type(None))
    and not any(word in key for word in ("bad", "bytes", "surrogate", "overflow", "too"))
    and key != "dotted-key-path"
}
READ_CASES |= {
    "nan-first": [NAN, INF],
    "infinity-first": {"a": -INF, "b": NAN},
    "minus-infinity-in-struct": {"a": {"b": [1, 2, -INF]}},
    "deep-list": nested(120),
    "deep-dict": nested(120, kind="dict"),
}


@pytest.mark.parametrize("data", READ_CASES.values(), ids=READ_CASES.keys())
def test_reads_as_json_format_does(data: Any) -> None:
    assert_reads_as_reference(built(data))


@pytest.mark.parametrize("value", unset_inside(), ids=["unset", "in-list", "in-struct", "enum"])
def test_values_with_no_kind_read_as_json_format_does(value: struct_pb2.Value) -> None:
    assert_reads_as_reference(value)


@pytest.mark.parametrize("shape_", ["lists", "structs"])
def test_values_decoded_from_the_wire_read_as_json_format_does(shape_: str) -> None:
    make = s.nested_list_value if shape_ == "lists" else s.nested_struct_value
    for depth in (0, 1, 20, 33):  # upb decodes 100 message levels (3 per object), no more
        assert_reads_as_reference(struct_pb2.Value.FromString(make(depth)))


def test_numbers_read_as_floats_and_non_finite_numbers_fail() -> None:
    assert shape(convert.value_to_json(built(3))) == ("float", (3.0).hex())
    with pytest.raises(ValueError, match="NaN"):
        convert.value_to_json(built([1, NAN]))
    with pytest.raises(InvalidArgument, match="initial_state: not representable") as caught:
        convert.struct_to_json(built({"a": -INF}).struct_value, "initial_state")
    assert isinstance(caught.value.__cause__, ValueError)


def test_error_and_result_protos_hold_the_structs_json_format_would_write() -> None:
    """error_to_proto's details and result_to_proto's state (present even when empty)."""
    for details in ({}, {"traceback": "x"}, {"a": 1, "traceback": "x", "b": [None, {"c": "d"}]}):
        got = message_pb2.RunError()
        convert.error_to_proto({"message": "m", "details": details}, got)
        expected = message_pb2.RunError()
        expected.CopyFrom(got)
        expected.ClearField("details")
        kept = {k: v for k, v in details.items() if k != "traceback"}
        if kept:
            json_format.ParseDict(kept, expected.details)
        assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
            deterministic=True
        )
    options = message_pb2.OutputOptions(include_state=True)
    for state in ({}, {"n": 1, "xs": [1.5, "a", True, None], "o": {}}):
        result = WorkflowResultData("r", "w", RunStatus.RUNNING, 1, state=state)
        out = convert.result_to_proto(result, options)
        reference = struct_pb2.Struct()
        json_format.ParseDict(state, reference)
        assert out.HasField("state")
        assert out.state.SerializeToString(deterministic=True) == reference.SerializeToString(
            deterministic=True
        )


# -- properties -----------------------------------------------------------------------------

keys = st.one_of(
    st.text(max_size=8),
    st.text(max_size=8),
    st.text(max_size=8),
    st.integers(-2, 2),
    st.none(),
    st.binary(max_size=2),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
)
not_json = st.one_of(
    st.binary(max_size=3),
    st.just(ODD),
    st.sampled_from([Decimal("1.5"), 1j, frozenset(), Number.ONE, Word.A, Text("t")]),
    st.integers(2**1024, 2**1100).flatmap(lambda n: st.sampled_from([n, -n])),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.text(max_size=12),
    not_json,
)
anything = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=12,
)
"""What a caller might hand json_to_value: JSON, mostly, and now and then what is not
(a bad leaf or key, an int beyond a double, a lone surrogate, a subclass)."""


def wrapped(leaf: Any, kinds: list[str]) -> Any:
    """`leaf` inside one container per entry of `kinds` ("list", "dict" or "tuple")."""
    for kind in kinds:
        leaf = nested(1, leaf, kind)
    return leaf


deep = st.builds(
    wrapped,
    st.one_of(s.json_values(max_leaves=3), not_json),
    st.lists(st.sampled_from(["list", "dict", "tuple"]), min_size=40, max_size=60),
)
"""Nesting around ParseDict's depth limit (49 or 50 containers), mixed kinds."""


@pytest.fixture(params=SEEDS, ids=lambda seed: f"seed={seed}")
def fuzz_seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_any_value_reads_as_json_format_reads_it(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """value_to_json and struct_to_json against MessageToDict, on Values of any shape
    (NaN and infinities included)."""

    @fuzz_settings(max_examples=300)
    @given(st.one_of(s.json_values(), s.json_objects))
    def check(data: Any) -> None:
        assert_reads_as_reference(built(data))

    run_here(check, fuzz_seed, request)


def test_any_data_writes_as_json_format_writes_it(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """json_to_value and json_to_struct against ParseDict, on JSON of any shape and on
    what is not JSON: the same bytes, or the same failure leaving the same bytes."""

    @fuzz_settings(max_examples=300)
    @given(st.one_of(anything, st.dictionaries(st.text(max_size=8), anything, max_size=4), deep))
    def check(data: Any) -> None:
        assert_writes_as_reference(data)

    run_here(check, fuzz_seed, request)


def test_json_round_trips_as_through_json_format(
    fuzz_seed: int, request: pytest.FixtureRequest
) -> None:
    """value_to_json(json_to_value(x)) is MessageToDict(ParseDict(x)) for finite JSON."""

    @fuzz_settings(max_examples=200)
    @given(s.json_values(finite=True))
    def check(data: Any) -> None:
        out = struct_pb2.Value()
        convert.json_to_value(data, out)
        reference = json_format.MessageToDict(json_format.ParseDict(data, struct_pb2.Value()))
        assert shape(convert.value_to_json(out)) == shape(reference)

    run_here(check, fuzz_seed, request)
