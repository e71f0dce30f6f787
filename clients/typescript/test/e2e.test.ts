/**
 * End to end against a real server (scripts/with_server.sh exports WAYSTATION_ADDRESS):
 * start -> SUSPENDED -> resume a nested path -> SUCCESS; invalid resume data decoded into
 * field violations; a traceparent that comes back as the run's trace id; a deadline; an
 * answer over the server's message limit. The tests import the built package by its name,
 * as a user would.
 */

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";

import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  AbortedError,
  AlreadyExistsError,
  Code,
  ConflictError,
  ConnectError,
  EarlierStepSuspendedError,
  FailedPreconditionError,
  ForeachIndexNotSuspendedError,
  InternalError,
  InvalidArgumentError,
  InvalidDataError,
  InvalidInputError,
  InvalidResumeDataError,
  LabelNotFoundError,
  NotFoundError,
  PermissionDeniedError,
  PreconditionError,
  ResourceExhaustedError,
  ResponseTooLargeError,
  ResumeConflictError,
  RunActiveError,
  RunAlreadyExistsError,
  RunChangedError,
  RunNotActiveError,
  RunNotFoundError,
  RunNotSuspendedError,
  RunStatus,
  ServerDrainingError,
  StepAmbiguousError,
  StepNotSuspendedError,
  StoreUnavailableError,
  UnauthenticatedError,
  UnavailableError,
  VersionMismatchError,
  WaystationError,
  WorkflowChangedError,
  WorkflowNotFoundError,
  createWaystationClient,
  formatStepPath,
  fromValue,
  stepPath,
  toValue,
  type WorkflowResult,
} from "@waystation/client";

import { rejection } from "./rejection.js";

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

describe("error classes", () => {
  test("an answer over the server's message limit is a ResponseTooLargeError", async () => {
    // inflate's result is `bytes` characters: more than the server's default 4 MiB limit,
    // which with_server.sh keeps.
    const bytes = 4 * 1024 * 1024 + 100_000;
    const err = await rejection(
      client.startRun({ workflowId: "inflate", inputData: toValue({ bytes }) }),
    );
    assert.ok(err instanceof ResponseTooLargeError, `${err.name}: ${err.message}`);
    assert.ok(err instanceof ResourceExhaustedError);
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.reason, "RESPONSE_TOO_LARGE");
    assert.ok(err.size !== undefined && err.limit !== undefined && err.size > err.limit);
    // The run took effect: it is listed (a listing carries no result).
    const runs = await client.listRuns({ workflowId: "inflate" });
    assert.ok(err.runId && runs.runs.some((run) => run.runId === err.runId));
  });

  test("every reason of the server (docs/api.md) picks its own class", () => {
    // reason, code, the reason's class, the class that the code alone picks (its parent)
    const { NotFound, AlreadyExists, FailedPrecondition: Precondition, InvalidArgument } = Code;
    const { Aborted, ResourceExhausted, Unavailable, Unauthenticated, PermissionDenied } = Code;
    const table: [string, Code, typeof WaystationError, typeof WaystationError][] = [
      ["RUN_NOT_FOUND", NotFound, RunNotFoundError, NotFoundError],
      ["WORKFLOW_NOT_FOUND", NotFound, WorkflowNotFoundError, NotFoundError],
      ["RUN_ALREADY_EXISTS", AlreadyExists, RunAlreadyExistsError, AlreadyExistsError],
      ["RUN_NOT_SUSPENDED", Precondition, RunNotSuspendedError, PreconditionError],
      ["STEP_NOT_SUSPENDED", Precondition, StepNotSuspendedError, PreconditionError],
      ["STEP_AMBIGUOUS", Precondition, StepAmbiguousError, PreconditionError],
      ["LABEL_NOT_FOUND", Precondition, LabelNotFoundError, PreconditionError],
      ["FOREACH_INDEX_NOT_SUSPENDED", Precondition, ForeachIndexNotSuspendedError, PreconditionError],
      ["RUN_NOT_ACTIVE", Precondition, RunNotActiveError, PreconditionError],
      ["RUN_ACTIVE", Precondition, RunActiveError, PreconditionError],
      ["EARLIER_STEP_SUSPENDED", Precondition, EarlierStepSuspendedError, PreconditionError],
      ["WORKFLOW_CHANGED", Precondition, WorkflowChangedError, PreconditionError],
      ["INVALID_RESUME_DATA", InvalidArgument, InvalidResumeDataError, InvalidDataError],
      ["INVALID_INPUT", InvalidArgument, InvalidInputError, InvalidDataError],
      ["INVALID_ARGUMENT", InvalidArgument, InvalidArgumentError, InvalidDataError],
      ["RESUME_CONFLICT", Aborted, ResumeConflictError, ConflictError],
      ["VERSION_MISMATCH", Aborted, VersionMismatchError, ConflictError],
      ["RUN_CHANGED", Aborted, RunChangedError, ConflictError],
      ["RESPONSE_TOO_LARGE", ResourceExhausted, ResponseTooLargeError, ResourceExhaustedError],
      ["STORE_UNAVAILABLE", Unavailable, StoreUnavailableError, UnavailableError],
      ["SERVER_DRAINING", Unavailable, ServerDrainingError, UnavailableError],
      ["UNAUTHENTICATED", Unauthenticated, UnauthenticatedError, UnauthenticatedError],
      ["PERMISSION_DENIED", PermissionDenied, PermissionDeniedError, PermissionDeniedError],
      ["INTERNAL", Code.Internal, InternalError, InternalError],
    ];
    for (const [reason, code, cls, parent] of table) {
      const err = WaystationError.from(refused(code, reason));
      assert.equal(err.constructor, cls, `${reason}: ${err.name}`);
      assert.ok(err instanceof parent, `${reason}: ${err.name} is no ${parent.name}`);
      assert.equal(err.reason, reason);
      const byCode = WaystationError.from(new ConnectError("refused", code));
      assert.equal(byCode.constructor, parent, `${code} alone: ${byCode.name}`);
    }
  });

  test("SERVER_DRAINING names the sequence to watch again after, as watchRun takes it", () => {
    const meta = { run_id: "r-1", after_sequence: "7" };
    const err = WaystationError.from(refused(Code.Unavailable, "SERVER_DRAINING", meta));
    assert.ok(err instanceof ServerDrainingError, err.name);
    assert.ok(err instanceof UnavailableError);
    assert.equal(err.runId, "r-1");
    assert.equal(err.afterSequence, 7n);
    const bare = WaystationError.from(refused(Code.Unavailable, "SERVER_DRAINING"));
    assert.ok(bare instanceof ServerDrainingError && bare.afterSequence === undefined);
  });
});

/** A ConnectError with an ErrorInfo of the server's domain, as it comes off the wire. */
function refused(code: Code, reason: string, metadata: Record<string, string> = {}): ConnectError {
  // ErrorInfo: reason (field 1), domain (field 2), metadata (field 3: entries, key 1 and value 2).
  const { LengthDelimited } = WireType;
  const info = new BinaryWriter();
  info.tag(1, LengthDelimited).string(reason).tag(2, LengthDelimited).string("waystation.dev");
  for (const [key, value] of Object.entries(metadata)) {
    info.tag(3, LengthDelimited).fork();
    info.tag(1, LengthDelimited).string(key).tag(2, LengthDelimited).string(value).join();
  }
  const wire = new ConnectError("refused", code);
  wire.details.push({ type: "google.rpc.ErrorInfo", value: info.finish() });
  return wire;
}

test("the Python names of the code classes are aliases", () => {
  assert.equal(FailedPreconditionError, PreconditionError);
  assert.equal(AbortedError, ConflictError);
  const err = WaystationError.from(new ConnectError("refused", Code.Aborted));
  assert.ok(err instanceof AbortedError);
});

describe("the address forms", () => {
  test("host:port works as the target", async () => {
    const byAddress = createWaystationClient(address);
    const workflows = await byAddress.listWorkflows({});
    const ids = workflows.workflows.map((w) => w.workflowId);
    assert.ok(ids.includes("document-review"), `workflows: ${ids.join(", ")}`);
  });
});
