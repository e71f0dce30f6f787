/**
 * End to end against a real server (scripts/with_server.sh exports WAYSTATION_ADDRESS):
 * start -> SUSPENDED -> resume a nested path -> SUCCESS; invalid resume data decoded into
 * field violations; a traceparent that comes back as the run's trace id; a deadline.
 * The tests import the built package by its name, as a user would.
 */

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";

import {
  Code,
  InvalidDataError,
  InvalidResumeDataError,
  RunNotSuspendedError,
  RunStatus,
  StepNotSuspendedError,
  WaystationError,
  createWaystationClient,
  formatStepPath,
  fromValue,
  stepPath,
  toValue,
  type WorkflowResult,
} from "@waystation/client";

const address = process.env["WAYSTATION_ADDRESS"];
if (!address) {
  throw new Error("WAYSTATION_ADDRESS is not set: run via scripts/with_server.sh");
}
const client = createWaystationClient({ baseUrl: `http://${address}` });

const DOCUMENT = { document_id: "d-1", title: "T", body: "a b" };

async function startReview(): Promise<WorkflowResult> {
  const started = await client.startRun({
    workflowId: "document-review",
    inputData: toValue(DOCUMENT),
  });
  assert.equal(started.status, RunStatus.SUSPENDED);
  return started;
}

async function rejection(promise: Promise<unknown>): Promise<WaystationError> {
  const err = await promise.then(
    () => assert.fail("the call should have failed"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof WaystationError, `not a WaystationError: ${String(err)}`);
  return err;
}

describe("document-review", () => {
  test("a nested suspension is resumed step by step until the run succeeds", async () => {
    const started = await startReview();
    assert.deepEqual(started.suspended[0]?.segments, ["review", "legal-review"]);
    const payload = fromValue(started.suspendPayload["review.legal-review"]);
    assert.equal((payload as { reviewer_role?: string }).reviewer_role, "legal");

    const legal = await client.resumeRun({
      runId: started.runId,
      step: { segments: ["review", "legal-review"] },
      resumeData: toValue({ approved: true, reviewer: "lee" }),
    });
    assert.equal(legal.status, RunStatus.SUSPENDED);
    assert.deepEqual(legal.suspended.map(formatStepPath), ["review.editor-signoff"]);
    assert.ok(legal.version > started.version);

    const done = await client.resumeRun({
      runId: started.runId,
      step: stepPath("review.editor-signoff"),
      resumeData: toValue({ signed_off: true, editor: "ed" }),
    });
    assert.equal(done.status, RunStatus.SUCCESS);
    assert.equal((fromValue(done.result) as { published?: boolean }).published, true);

    const events = [];
    for await (const event of client.watchRun({ runId: started.runId })) events.push(event);
    assert.ok(events.length > 0);
    assert.equal(events.at(-1)?.runStatus, RunStatus.SUCCESS);

    const again = await rejection(
      client.resumeRun({ runId: started.runId, resumeData: toValue({ signed_off: true }) }),
    );
    assert.ok(again instanceof RunNotSuspendedError);
    assert.equal(again.code, Code.FailedPrecondition);
    assert.equal(again.runId, started.runId);
  });

  test("invalid resume data is refused with its field violations and the run stays suspended", async () => {
    const started = await startReview();
    const err = await rejection(
      client.resumeRun({
        runId: started.runId,
        step: stepPath(["review", "legal-review"]),
        resumeData: toValue({ approved: "nope" }),
      }),
    );
    assert.ok(err instanceof InvalidResumeDataError);
    assert.ok(err instanceof InvalidDataError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.reason, "INVALID_RESUME_DATA");
    assert.equal(err.domain, "waystation.dev");
    assert.equal(err.runId, started.runId);
    assert.equal(err.stepPath, "review.legal-review");
    const fields = err.fieldViolations.map((v) => v.field);
    assert.ok(fields.includes("resume_data.approved"), `violations: ${fields.join(", ")}`);
    assert.ok(fields.includes("resume_data.reviewer"), `violations: ${fields.join(", ")}`);

    const run = await client.getRun({ runId: started.runId });
    assert.equal(run.status, RunStatus.SUSPENDED);
  });

  test("a resume of a step that is not suspended lists the suspended steps", async () => {
    const started = await startReview();
    const err = await rejection(
      client.resumeRun({
        runId: started.runId,
        step: stepPath("review.editor-signoff"),
        resumeData: toValue({ signed_off: true, editor: "ed" }),
      }),
    );
    assert.ok(err instanceof StepNotSuspendedError);
    assert.equal(err.reason, "STEP_NOT_SUSPENDED");
    assert.deepEqual(err.suspended.map(formatStepPath), ["review.legal-review"]);
  });

  test("a traceparent sent in metadata comes back as the result's trace id", async () => {
    const traceId = randomBytes(16).toString("hex");
    const parent = randomBytes(8).toString("hex");
    const started = await client.startRun(
      { workflowId: "document-review", inputData: toValue(DOCUMENT) },
      { headers: { traceparent: `00-${traceId}-${parent}-01` } },
    );
    assert.equal(started.traceId, traceId);
  });
});

describe("deadlines", () => {
  test("a deadline that expires during StartRun is reported as DEADLINE_EXCEEDED", async () => {
    const dir = process.env["WAYSTATION_TEST_LOG_DIR"] ?? tmpdir();
    const log = join(dir, `ts-client-${randomUUID()}.log`);
    const began = Date.now();
    const err = await rejection(
      client.startRun(
        { workflowId: "slow", inputData: toValue({ log, seconds: 2 }) },
        { timeoutMs: 300 },
      ),
    );
    assert.equal(err.code, Code.DeadlineExceeded);
    assert.ok(Date.now() - began < 1900, "the call waited for the run instead of its deadline");
  });
});

describe("the address forms", () => {
  test("host:port works as the target", async () => {
    const byAddress = createWaystationClient(address);
    const workflows = await byAddress.listWorkflows({});
    const ids = workflows.workflows.map((w) => w.workflowId);
    assert.ok(ids.includes("document-review"), `workflows: ${ids.join(", ")}`);
  });
});
