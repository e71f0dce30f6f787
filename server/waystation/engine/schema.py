"""Validation and serialization at the edges of a step: pydantic models in, JSON out.

A step with a schema receives instances of its models; without one it receives the raw JSON.
Whatever a step returns or suspends with is stored as JSON, validated when a schema is given.
"""

from __future__ import annotations

import math
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
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
    """Stored JSON to what a step sees: a model instance, or the JSON itself without a
    schema. Raises pydantic.ValidationError."""
    if schema is None:
        return data
    return validate(schema, data, stored=True)


def validate(schema: type[BaseModel], data: Any, stored: bool = False) -> BaseModel:
    """`schema.model_validate(data)`. For data this module `stored` (a model's JSON as
    `dump` writes it: by alias, with its computed fields), which a step reads back: keys are
    taken by alias or by field name, a serialization-only alias is read back as its field
    (at the top level), and keys the model does not know, such as computed fields, are
    ignored even where the model forbids extra keys, which is for what clients send (a
    valid resume of a step with a computed field in its suspend payload failed the run)."""
    keys = _keys(schema)
    options: dict[str, Any] = {}
    if stored:
        if keys.read_back and isinstance(data, dict):
            data = {keys.read_back.get(key, key): value for key, value in data.items()}
        options = {"by_alias": True, "by_name": True}
        options["extra"] = None if keys.keeps_extra else "ignore"
    if keys.strict:
        return schema.model_validate_json(orjson.dumps(whole_numbers(data)), **options)
    return schema.model_validate(data, **options)


def whole_numbers(data: Any) -> Any:
    """`data` with its whole doubles (up to 2^53) as ints, as the client's JSON had them
    (a google.protobuf.Value carries every number as a double, so 3 comes back as 3.0)."""
    if isinstance(data, float):
        return int(data) if data.is_integer() and abs(data) <= 2**53 else data
    if isinstance(data, dict):
        return {key: whole_numbers(value) for key, value in data.items()}
    if isinstance(data, list):
        return [whole_numbers(value) for value in data]
    return data


def stored_keys(schema: Schema, update: dict[str, Any]) -> dict[str, Any]:
    """`update` (keys by field name or as stored) with its field names turned into the keys
    `dump` stores them under, so that merging it into stored JSON replaces those values
    (a state update by field name lost to the stored value under the field's alias)."""
    if schema is None:
        return update
    keys = _keys(schema).stored
    return {keys.get(key, key): value for key, value in update.items()}


@dataclass(frozen=True)
class _Keys:
    """How a model's JSON keys differ from its field names."""

    stored: dict[str, str]
    """Field name -> the key `dump` writes it under (its serialization alias or alias)."""
    read_back: dict[str, str]
    """Serialization-only alias -> field name (validation does not know the alias)."""
    keeps_extra: bool
    """Whether a model in it takes extra keys (`extra="allow"`), which reading stored JSON
    with extra keys ignored would drop (so it is read as each model says)."""
    strict: bool
    """Whether a model in it is strict (`strict=True`): its data is validated as JSON, where
    strict pydantic takes a datetime or a UUID as a string (in Python it wants the object,
    which no client can send)."""


_KEYS: weakref.WeakKeyDictionary[type[BaseModel], _Keys] = weakref.WeakKeyDictionary()


def _keys(schema: type[BaseModel]) -> _Keys:
    found = _KEYS.get(schema)
    if found is None:
        fields = schema.model_fields.items()
        models = _models_in(schema)
        found = _KEYS[schema] = _Keys(
            stored={
                name: key
                for name, info in fields
                if (key := info.serialization_alias or info.alias) and key != name
            },
            read_back={
                info.serialization_alias: name
                for name, info in fields
                if info.serialization_alias
                and info.serialization_alias not in (name, info.alias, info.validation_alias)
            },
            keeps_extra=any(m.model_config.get("extra") == "allow" for m in models),
            strict=any(m.model_config.get("strict") for m in models),
        )
    return found


def _models_in(schema: type[BaseModel]) -> set[type[BaseModel]]:
    """The model and every model its fields hold (in lists, dicts, unions, ...)."""
    found: set[type[BaseModel]] = set()
    todo: list[Any] = [schema]
    while todo:
        kind = todo.pop()
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            if kind not in found:
                found.add(kind)
                todo += [info.annotation for info in kind.model_fields.values()]
        else:
            todo += get_args(kind)
    return found


def dump(schema: Schema, value: Any) -> JSON:
    """What a step produced to JSON, validated against `schema` when given.
    Raises pydantic.ValidationError (and TypeError for values JSON cannot hold)."""
    if schema is not None and not isinstance(value, schema):
        value = validate(schema, value)
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


def normalize(schema: Schema, data: JSON, stored: bool = False) -> JSON:
    """Validate JSON against `schema` and return its canonical JSON (defaults applied,
    unknown keys dropped as the model says). Raises pydantic.ValidationError, also for
    what pydantic accepts but JSON or an answer cannot carry: NaN and infinities (which
    pydantic's floats take), integers past a double's range (which its ints take, from
    digits in a string) and strings with a lone surrogate (which a validator can make).
    `stored`: `data` is JSON this module wrote (see `validate`)."""
    if schema is None:
        return data
    out = to_jsonable_python(validate(schema, data, stored))
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


def json_schema(
    schema: Schema, mode: Literal["validation", "serialization"] = "validation"
) -> dict[str, Any] | None:
    """The JSON Schema of a model, for GetWorkflow: of the data it accepts (validation),
    or of the JSON it is stored and answered as (serialization, by alias)."""
    return None if schema is None else schema.model_json_schema(mode=mode)
