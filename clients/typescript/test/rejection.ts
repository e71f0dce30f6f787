/** What the tests share: the WaystationError that a call must fail with. */

import assert from "node:assert/strict";

import { WaystationError } from "@waystation/client";

/** The error that `promise` rejects with, which must be a WaystationError. */
export async function rejection(promise: Promise<unknown>): Promise<WaystationError> {
  const err = await promise.then(
    () => assert.fail("the call should have failed"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof WaystationError, `not a WaystationError: ${String(err)}`);
  return err;
}
