"""The JSON helpers: Python data to google.protobuf.Value and back (no server needed)."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from waystation_client import (
    RunStatus,
    WorkflowResult,
    from_struct,
    from_value,
    result_json,
    to_struct,
    to_value,
)

NESTED = {"s": "x", "n": 3, "f": 2.5, "b": False, "z": None, "l": [1, [], {}], "d": {"e": {}}}


def test_json_like_data_round_trips_through_value() -> None:
    assert from_value(to_value(NESTED)) == NESTED
    assert from_struct(to_struct(NESTED)) == NESTED
    assert from_value(to_value(("a", 1))) == ["a", 1]


def test_integral_numbers_come_back_as_int_and_others_as_float() -> None:
    assert type(from_value(to_value(7))) is int
    assert type(from_value(to_value(7.0))) is int
    assert type(from_value(to_value(7.5))) is float
    assert type(from_value(to_value(2.0**60))) is float


@pytest.mark.parametrize("number", [2**53, -(2**53), 2**53 - 1], ids=["2**53", "-2**53", "2**53-1"])
def test_integral_numbers_up_to_2_53_inclusive_come_back_as_int(number: int) -> None:
    """|n| <= 2**53, the bound of a double's exact ints, is the bound included."""
    back = from_value(to_value(number))
    assert type(back) is int and back == number


@pytest.mark.parametrize("number", [2**53 + 2, -(2**53 + 2)], ids=["2**53+2", "-(2**53+2)"])
def test_integral_numbers_past_2_53_come_back_as_float(number: int) -> None:
    """Past 2**53 a double's integral value need not be the int that was sent: a float."""
    back = from_value(to_value(number))
    assert type(back) is float and back == number


def test_bools_are_bool_values_and_ints_and_floats_number_values() -> None:
    """A bool is an int in Python, but JSON true is not the number 1."""
    for flag in (True, False):
        value = to_value(flag)
        assert value.WhichOneof("kind") == "bool_value"
        assert value.bool_value is flag
        assert from_value(value) is flag
    for number in (1, 0, 1.0, 0.0, 2.5):
        value = to_value(number)
        assert value.WhichOneof("kind") == "number_value"
        assert value.number_value == number
    assert to_struct({"b": True}).fields["b"].WhichOneof("kind") == "bool_value"


def test_empty_containers_and_unset_values_keep_their_kind() -> None:
    assert to_value({}).WhichOneof("kind") == "struct_value"
    assert to_value([]).WhichOneof("kind") == "list_value"
    assert from_value(struct_pb2.Value()) is None


def test_protobuf_values_are_taken_as_they_are() -> None:
    assert from_value(to_value(to_value({"a": 1}))) == {"a": 1}
    assert from_value(to_value(to_struct({"a": 1}))) == {"a": 1}


@pytest.mark.parametrize("bad", [object(), b"bytes", {1: "int key"}])
def test_data_that_is_not_json_like_raises_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        to_value(bad)


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, -math.inf, 10**400, -(10**400)],
    ids=["nan", "inf", "-inf", "10**400", "-10**400"],
)
def test_numbers_json_cannot_carry_raise_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="JSON number"):
        to_value(bad)
    with pytest.raises(ValueError, match="JSON number"):
        to_struct({"nested": [bad]})


def test_an_int_past_a_double_is_refused_without_its_digits() -> None:
    with pytest.raises(ValueError) as refused:
        to_value(-(2**5000))  # more digits than str() of an int may make
    assert str(refused.value) == "an int of 5001 bits is not a JSON number (a double)"


def test_result_json_keeps_proto_field_names_and_enum_names() -> None:
    result = WorkflowResult(
        run_id="r", status=RunStatus.RUN_STATUS_SUCCESS, result=to_value({"ok": True})
    )
    assert result_json(result) == {
        "run_id": "r",
        "status": "RUN_STATUS_SUCCESS",
        "result": {"ok": True},
    }
