"""Validation and serialization at the edges of a step: pydantic models in, JSON out.

A step with a schema receives instances of its models; without one it receives the raw JSON.
Whatever a step returns or suspends with is stored as JSON, validated when a schema is given.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError, to_jsonable_python

from waystation.engine.model import JSON

Schema = type[BaseModel] | None

MAX_NESTING = 31
"""Levels of lists and objects a payload may nest. Protobuf decoders stop at 100 message
levels (Python's and Java's); an object is three (Value, Struct, map entry), and an answer
holds a payload up to six levels down (RunEvent, WorkflowResult, steps entry, StepResult,
items, Value): 6 + 31 x 3 = 99, so every answer stays readable in every language."""


def check(owner: str, field: str, value: Any) -> Schema:
    """`value` if it can be a schema (a pydantic model class, or None); TypeError if not,
    when the workflow is defined rather than on every call that would use it."""
    if value is None or (isinstance(value, type) and issubclass(value, BaseModel)):
        return value
    raise TypeError(f"{owner}: {field} must be a pydantic model class or None, not {value!r}")


def parse(schema: Schema, data: JSON) -> Any:
    """JSON to what a step sees: a model instance, or the JSON itself without a schema.
    Raises pydantic.ValidationError."""
    if schema is None:
        return data
    return schema.model_validate(data)


def dump(schema: Schema, value: Any) -> JSON:
    """What a step produced to JSON, validated against `schema` when given.
    Raises pydantic.ValidationError (and TypeError for values JSON cannot hold)."""
    if schema is not None and not isinstance(value, schema):
        value = schema.model_validate(value)
    return finite(to_jsonable_python(value))


def finite(value: JSON) -> JSON:
    """`value`, if JSON can hold it and an answer can carry it; ValueError for NaN and
    infinities, integers past a double's range, strings that are not UTF-8 (a lone
    surrogate) and nesting deeper than MAX_NESTING (one walk finds any of them)."""
    found = _unstorable(value, (), MAX_NESTING)
    if found is not None:
        where, problem = found
        if problem is _TOO_DEEP:
            raise ValueError(_TOO_DEEP)
        text = ".".join(str(part) for part in where) or "value"
        raise ValueError(f"{text}: {problem}")
    return value


def check_nesting(value: JSON) -> None:
    """ValueError if `value` (JSON read from a request, which holds no NaN) nests lists and
    objects deeper than MAX_NESTING."""
    found = _unstorable(value, (), MAX_NESTING)
    if found is not None and found[1] is _TOO_DEEP:
        raise ValueError(_TOO_DEEP)


_TOO_DEEP = f"nested deeper than {MAX_NESTING} levels of lists and objects"
_NOT_FINITE = "NaN and infinities cannot be stored as JSON"
_TOO_BIG = "an integer past a double's range (about 1.8e308) cannot be carried as a number"
_NOT_UTF8 = "a string that is not valid UTF-8 (a lone surrogate) cannot be carried"


def normalize(schema: Schema, data: JSON) -> JSON:
    """Validate JSON against `schema` and return its canonical JSON (defaults applied,
    unknown keys dropped as the model says). Raises pydantic.ValidationError, also for
    what pydantic accepts but JSON or an answer cannot carry: NaN and infinities (which
    pydantic's floats take), integers past a double's range (which its ints take, from
    digits in a string) and strings with a lone surrogate (which a validator can make)."""
    if schema is None:
        return data
    out = to_jsonable_python(schema.model_validate(data))
    found = _unstorable(out, (), None)
    if found is not None:
        raise ValidationError.from_exception_data(
            schema.__name__,
            [
                {
                    "type": PydanticCustomError("unstorable", found[1]),
                    "loc": found[0],
                    "input": data,
                }
            ],
        )
    return out


Location = tuple[str | int, ...]
_DOUBLE_MAX = int(sys.float_info.max)


def _unstorable(value: JSON, loc: Location, levels: int | None) -> tuple[Location, str] | None:
    """The location of the first value in `value` that an answer cannot carry, with the
    problem: NaN or infinity, an integer past a double's range, a string (or key) that is
    not UTF-8, or a list or object nested deeper than `levels` (None: any depth)."""
    if isinstance(value, str):
        return None if value.isascii() or _utf8(value) else (loc, _NOT_UTF8)
    if isinstance(value, float):
        return None if math.isfinite(value) else (loc, _NOT_FINITE)
    if isinstance(value, int):
        return None if -_DOUBLE_MAX <= value <= _DOUBLE_MAX else (loc, _TOO_BIG)
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    if levels is not None and len(loc) >= levels:
        return loc, _TOO_DEEP
    for key, item in items:
        if isinstance(key, str) and not (key.isascii() or _utf8(key)):
            return (*loc, key), _NOT_UTF8
        found = _unstorable(item, (*loc, key), levels)
        if found is not None:
            return found
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_schema(schema: Schema) -> dict[str, Any] | None:
    """The JSON Schema of a model, for GetWorkflow."""
    return None if schema is None else schema.model_json_schema()
