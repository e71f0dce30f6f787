"""JSON-like data to and from `google.protobuf.Value` / `Struct`.

User data (workflow input, resume data, results, suspend payloads) travels as
`google.protobuf.Value`, so every language reads it as JSON. JSON numbers are doubles: an
integral number comes back as `int` (when it is exactly representable, |n| <= 2**53) and any
other number as `float`, as `json.loads` would read the text form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

_MAX_EXACT_INT = 2**53


def to_value(obj: object) -> struct_pb2.Value:
    """`obj` (None, bool, int, float, str, mappings with str keys, lists, tuples) as a Value.

    A `Value`, `Struct` or `ListValue` is taken as it is. Raises TypeError for anything else
    and ValueError for NaN, infinity and an int beyond a double's range, which JSON numbers
    (doubles, in a Value) cannot carry.
    """
    value = struct_pb2.Value()
    _fill(value, obj)
    return value


def from_value(value: struct_pb2.Value) -> Any:
    """The plain Python data (None, bool, int, float, str, dict, list) in `value`."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        return _number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    return [from_value(item) for item in value.list_value.values]


def to_struct(mapping: Mapping[str, object]) -> struct_pb2.Struct:
    """`mapping` as a Struct (see `to_value` for the values it takes)."""
    struct = struct_pb2.Struct()
    _fill_struct(struct, mapping)
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """The plain dict in `struct`."""
    return {key: from_value(item) for key, item in struct.fields.items()}


def result_json(message: Message) -> dict[str, Any]:
    """A message (typically a `WorkflowResult` or `Run`) as plain dicts and lists.

    Field names stay as in the proto (`run_id`, `suspend_payload`), enums are their names
    (`"RUN_STATUS_SUCCESS"`), and fields at their default value are left out.
    """
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _number(number: float) -> int | float:
    if number.is_integer() and abs(number) <= _MAX_EXACT_INT:
        return int(number)
    return number


def _fill(target: struct_pb2.Value, obj: object) -> None:
    # Filling in place (instead of CopyFrom of converted children) keeps conversion linear.
    if obj is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        target.bool_value = obj
    elif isinstance(obj, int | float):
        target.number_value = _double(obj)
    elif isinstance(obj, str):
        target.string_value = obj
    elif isinstance(obj, struct_pb2.Value):
        target.CopyFrom(obj)
    elif isinstance(obj, struct_pb2.Struct):
        target.struct_value.CopyFrom(obj)
    elif isinstance(obj, struct_pb2.ListValue):
        target.list_value.CopyFrom(obj)
    elif isinstance(obj, Mapping):
        _fill_struct(target.struct_value, obj)
    elif isinstance(obj, Sequence) and not isinstance(obj, bytes | bytearray):
        _fill_list(target.list_value, obj)
    else:
        raise TypeError(f"cannot convert {type(obj).__name__} to a google.protobuf.Value")


def _double(number: int | float) -> float:
    try:
        double = float(number)
    except OverflowError:  # an int past a double's range: too long to show
        bits = abs(int(number)).bit_length()
        raise ValueError(f"an int of {bits} bits is not a JSON number (a double)") from None
    if not math.isfinite(double):
        raise ValueError(f"{number!r} is not a JSON number")
    return double


def _fill_struct(target: struct_pb2.Struct, mapping: Mapping[Any, object]) -> None:
    target.SetInParent()  # an empty mapping is still a value: mark it as set
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"mapping keys must be str, not {type(key).__name__}")
        _fill(target.fields[key], item)


def _fill_list(target: struct_pb2.ListValue, items: Sequence[object]) -> None:
    target.SetInParent()
    for item in items:
        _fill(target.values.add(), item)
