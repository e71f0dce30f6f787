"""Turn command-line text into request fields: JSON data, step paths and run statuses.

Every problem here is a usage error (exit code 2), raised before any call is made.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from google.protobuf import json_format, struct_pb2

from waystation.api.v1 import enums_pb2, message_pb2

_STATUS_PREFIX = "RUN_STATUS_"


def read_json(text: str, option: str) -> Any:
    """Parse JSON text, or the file named after an `@` (`@-` reads standard input)."""
    raw = _read_source(text, option) if text.startswith("@") else text
    try:
        data = json.loads(raw)
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"not valid JSON: {err}", param_hint=option) from None
    except RecursionError:
        raise typer.BadParameter("JSON nested too deeply", param_hint=option) from None
    except UnicodeEncodeError:
        raise typer.BadParameter(
            "a string that is not valid UTF-8 (a lone surrogate escape)", param_hint=option
        ) from None
    return data


def _read_source(text: str, option: str) -> str:
    name = text[1:]
    try:
        if name == "-":
            return sys.stdin.read()
        return Path(name).read_text(encoding="utf-8")
    except OSError as err:
        raise typer.BadParameter(
            f"cannot read {name!r}: {err.strerror}", param_hint=option
        ) from None
    except UnicodeDecodeError:
        where = "standard input" if name == "-" else repr(name)
        raise typer.BadParameter(f"{where} is not UTF-8 text", param_hint=option) from None


def json_value(text: str | None, option: str) -> struct_pb2.Value | None:
    """A `google.protobuf.Value` holding any JSON given on the command line, or None."""
    if text is None:
        return None
    value = struct_pb2.Value()
    _fill(value, read_json(text, option), option)
    return value


def json_object(text: str | None, option: str) -> struct_pb2.Struct | None:
    """A `google.protobuf.Struct` from a JSON object given on the command line, or None."""
    if text is None:
        return None
    data = read_json(text, option)
    if not isinstance(data, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=option)
    struct = struct_pb2.Struct()
    _fill(struct, data, option)
    return struct


def _fill(message: struct_pb2.Value | struct_pb2.Struct, data: Any, option: str) -> None:
    """Parse `data` into `message`: too deep for protobuf (100 levels) is a usage error (a
    request nested deeper than 31 levels is the server's to refuse, with the field named)."""
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, RecursionError) as err:
        raise typer.BadParameter(f"cannot be sent: {err}", param_hint=option) from None


def step_path(text: str | None) -> message_pb2.StepPath | None:
    """Split the dotted text form of a step path (`review.decide`) into its segments."""
    if text is None:
        return None
    segments = text.split(".")
    if not all(segments):
        raise typer.BadParameter(f"{text!r} has an empty segment", param_hint="--step")
    return message_pb2.StepPath(segments=segments)


def run_status(name: str) -> enums_pb2.RunStatus.ValueType:
    """A RunStatus from `suspended`, `SUCCESS` or `RUN_STATUS_FAILED` (any case)."""
    key = name.strip().upper()
    if not key.startswith(_STATUS_PREFIX):
        key = _STATUS_PREFIX + key
    try:
        return enums_pb2.RunStatus.Value(key)
    except ValueError:
        choices = ", ".join(status_names())
        raise typer.BadParameter(
            f"{name!r} is not one of {choices}", param_hint="--status"
        ) from None


def status_names() -> list[str]:
    """The statuses a person may type, in lower case."""
    names = enums_pb2.RunStatus.keys()
    return [n.removeprefix(_STATUS_PREFIX).lower() for n in names if not n.endswith("UNSPECIFIED")]
