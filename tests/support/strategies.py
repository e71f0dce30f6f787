"""Hypothesis strategies and wire-format helpers for bad input (issue 8, item 2).

Odd text (empty, very long, unicode, control and bidi characters, dotted and item-marked
step ids), JSON of any shape (NaN and infinities included), protobuf Values and Structs
built in place (so nesting deeper than protobuf's copy limit can still be sent), and raw
protobuf wire bytes (deep nesting, invalid UTF-8) for calls that bypass the client's own
serializer.
"""

from __future__ import annotations

import math
import struct as binary
from typing import Any

from google.protobuf import json_format, struct_pb2
from hypothesis import strategies as st

# Step ids, labels and workflow ids of the registered workflows, so that random paths
# sometimes name real steps (and go deeper than "no such step").
KNOWN_WORKFLOWS = ["order-approval", "document-review"]
KNOWN_SEGMENTS = [
    "validate",
    "approval",
    "fulfil",
    "prepare",
    "review",
    "legal-review",
    "editor-signoff",
    "publish",
]
KNOWN_LABELS = ["manager", "legal", "editor"]

ODD_STRINGS = [
    ".",
    "..",
    "a.b",
    "review.legal-review",
    "#",
    "approval#0",
    "approval#-1",
    "approval#x",
    "\x00",
    "a\x00b",
    "\u202e",
    "\ufeff",
    "\U0001f986",
    " ",
    "\t\r\n",
    "%s%n",
    "'; DROP TABLE runs; --",
    "../../etc/passwd",
    "*",
    "\\",
]

SPECIAL_CHARACTERS = st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Zp", "So"])

odd_text: st.SearchStrategy[str] = st.one_of(
    st.just(""),
    st.text(max_size=16),
    st.text(SPECIAL_CHARACTERS, min_size=1, max_size=8),
    st.sampled_from(ODD_STRINGS),
    st.integers(200, 20_000).map(lambda n: "w" * n),
)
"""Ids, labels, tokens: empty, short, control/format characters, odd samples, very long."""

segment: st.SearchStrategy[str] = st.one_of(st.sampled_from(KNOWN_SEGMENTS), odd_text)

step_segments: st.SearchStrategy[list[str]] = st.lists(segment, max_size=4)

label: st.SearchStrategy[str] = st.one_of(st.sampled_from(KNOWN_LABELS), odd_text)

workflow_id: st.SearchStrategy[str] = st.one_of(st.sampled_from(KNOWN_WORKFLOWS), odd_text)

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

int32: st.SearchStrategy[int] = st.one_of(
    st.sampled_from([INT32[0], -1, 0, 1, 2, 1000, 1001, INT32[1]]), st.integers(*INT32)
)
int64: st.SearchStrategy[int] = st.one_of(
    st.sampled_from([INT64[0], -1, 0, 1, 2, 5, 6, INT64[1]]), st.integers(*INT64)
)

run_status_ints: st.SearchStrategy[list[int]] = st.lists(
    st.one_of(st.integers(0, 8), st.just(99), st.integers(*INT32)), max_size=3
)


def json_values(finite: bool = False, max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """JSON of any shape; with finite=False floats include NaN and infinities."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(allow_nan=not finite, allow_infinity=not finite),
        st.text(max_size=12),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=8), json_values(), max_size=4
)


# -- protobuf Values, built in place ------------------------------------------------------


def fill_value(out: struct_pb2.Value, data: Any) -> None:
    """Write JSON `data` into `out` without copying messages (NaN and infinities kept)."""
    if data is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        out.bool_value = data
    elif isinstance(data, int | float):
        out.number_value = float(data)
    elif isinstance(data, str):
        out.string_value = data
    elif isinstance(data, list):
        out.list_value.SetInParent()
        for item in data:
            fill_value(out.list_value.values.add(), item)
    elif isinstance(data, dict):
        fill_struct(out.struct_value, data)
    else:
        raise TypeError(f"not JSON: {data!r}")


def fill_struct(out: struct_pb2.Struct, data: dict[str, Any]) -> None:
    out.SetInParent()
    for key, item in data.items():
        fill_value(out.fields[key], item)


def is_finite(data: Any) -> bool:
    if isinstance(data, float):
        return math.isfinite(data)
    if isinstance(data, list):
        return all(is_finite(x) for x in data)
    if isinstance(data, dict):
        return all(is_finite(x) for x in data.values())
    return True


def as_received(data: Any) -> Any:
    """The JSON the server reads from a Value holding `data` (numbers become floats).
    Raises ValueError for NaN and infinities, as the server's conversion does."""
    out = struct_pb2.Value()
    fill_value(out, data)
    return json_format.MessageToDict(out)


# -- raw wire format ----------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def varint_field(number: int, n: int) -> bytes:
    return varint(number << 3) + varint(n)


NUMBER_ONE = bytes([2 << 3 | 1]) + binary.pack("<d", 1.0)
"""A Value holding number_value 1.0."""


def nested_list_value(depth: int) -> bytes:
    """A serialized Value: `depth` lists around the number 1 ([[[1]]] for depth 3)."""
    value = NUMBER_ONE
    for _ in range(depth):
        value = length_delimited(6, length_delimited(1, value))
    return value


def nested_struct_value(depth: int) -> bytes:
    """A serialized Value: `depth` objects around the number 1 ({"k": {"k": 1}} for 2)."""
    value = NUMBER_ONE
    for _ in range(depth):
        entry = length_delimited(1, b"k") + length_delimited(2, value)
        value = length_delimited(5, length_delimited(1, entry))
    return value


def resume_request_bytes(run_id: bytes, resume_data: bytes, validate_only: bool = True) -> bytes:
    """A serialized ResumeRequest (run_id = 1, resume_data = 3, validate_only = 12), with
    the raw bytes given: they may be invalid UTF-8 or nested beyond any limit."""
    out = length_delimited(1, run_id) + length_delimited(3, resume_data)
    return out + (varint_field(12, 1) if validate_only else b"")


INVALID_UTF8 = [
    b"\xff",
    b"\xc3\x28",  # a lead byte without its continuation
    b"\xa0\xa1",  # continuation bytes alone
    b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\x28",
    b"\xed\xa0\x80",  # an encoded UTF-16 surrogate
    b"\xc0\xaf",  # overlong "/"
    b"\xf8\x88\x80\x80\x80",  # five-byte form
    b"ok\x80ok",
]
