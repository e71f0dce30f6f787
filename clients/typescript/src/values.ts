/**
 * JSON <-> google.protobuf.Value. User data (workflow input, results, suspend payloads,
 * resume data) travels as `Value`; these helpers let callers write and read plain JSON.
 * `Struct` fields (request_context, initial_state, ...) are already plain JSON objects in
 * the generated types and need no helper.
 */

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";

export type { JsonValue };

/** Wraps a JSON value (object, array, string, number, boolean or null) in a `Value`. */
export function toValue(json: JsonValue): Value {
  return fromJson(ValueSchema, json);
}

/**
 * The JSON held by a `Value`; `undefined` when the field is unset, `null` for a `Value`
 * whose kind is unset (the server never sends one, protobuf allows it).
 */
export function fromValue(value: Value | undefined): JsonValue | undefined {
  if (value === undefined) return undefined;
  if (value.kind.case === undefined) return null;
  return toJson(ValueSchema, value);
}
