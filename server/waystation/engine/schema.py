"""Validation and serialization at the edges of a step: pydantic models in, JSON out.

A step with a schema receives instances of its models; without one it receives the raw JSON.
Whatever a step returns or suspends with is stored as JSON, validated when a schema is given.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from waystation.engine.model import JSON

Schema = type[BaseModel] | None


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
    return to_jsonable_python(value)


def normalize(schema: Schema, data: JSON) -> JSON:
    """Validate JSON against `schema` and return its canonical JSON (defaults applied,
    unknown keys dropped as the model says). Raises pydantic.ValidationError."""
    return data if schema is None else to_jsonable_python(schema.model_validate(data))


def json_schema(schema: Schema) -> dict[str, Any] | None:
    """The JSON Schema of a model, for GetWorkflow."""
    return None if schema is None else schema.model_json_schema()
