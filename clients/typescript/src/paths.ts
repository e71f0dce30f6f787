/**
 * Step paths. The server takes a path as segments, top-level step first, and never splits a
 * segment; the dotted text form ("review.legal-review") is for people and for the keys of
 * `WorkflowResult.steps` / `suspendPayload`. Step ids cannot contain ".".
 */

import { create } from "@bufbuild/protobuf";
import { StepPathSchema, type StepPath } from "./gen/waystation/v1/message_pb.js";

/** A `StepPath` from its text form ("a.b", split on ".") or from its segments. */
export function stepPath(path: string | readonly string[]): StepPath {
  const segments = typeof path === "string" ? path.split(".") : [...path];
  if (segments.length === 0 || segments.some((s) => s === "")) {
    throw new TypeError(`invalid step path ${JSON.stringify(path)}: empty segment`);
  }
  return create(StepPathSchema, { segments });
}

/** The text form of a path ("a.b"): the key used by `steps` and `suspendPayload`. */
export function formatStepPath(path: StepPath | readonly string[]): string {
  const segments = "segments" in path ? path.segments : path;
  return segments.join(".");
}
