/**
 * Typed errors, decoded from the rich gRPC status that the server attaches to every refusal:
 * a `google.rpc.ErrorInfo` (stable `reason`, domain "waystation.dev", ids in `metadata`),
 * a `google.rpc.BadRequest` for invalid data, and a `waystation.v1.SuspendedStepsDetail`
 * when a resume names the wrong step. The tree mirrors the server's `engine/errors.py`, plus
 * the reasons its transport adds (RUN_CHANGED, RESPONSE_TOO_LARGE, STORE_UNAVAILABLE):
 *
 *     WaystationError                    every failed call (also deadlines, transport errors)
 *     ├── NotFoundError
 *     │   ├── RunNotFoundError           RUN_NOT_FOUND
 *     │   └── WorkflowNotFoundError      WORKFLOW_NOT_FOUND
 *     ├── AlreadyExistsError
 *     │   └── RunAlreadyExistsError      RUN_ALREADY_EXISTS
 *     ├── PreconditionError
 *     │   ├── RunNotSuspendedError       RUN_NOT_SUSPENDED
 *     │   ├── StepNotSuspendedError      STEP_NOT_SUSPENDED
 *     │   ├── StepAmbiguousError         STEP_AMBIGUOUS
 *     │   ├── LabelNotFoundError         LABEL_NOT_FOUND
 *     │   ├── ForeachIndexNotSuspendedError  FOREACH_INDEX_NOT_SUSPENDED
 *     │   ├── RunNotActiveError          RUN_NOT_ACTIVE
 *     │   ├── RunActiveError             RUN_ACTIVE
 *     │   ├── EarlierStepSuspendedError  EARLIER_STEP_SUSPENDED
 *     │   └── WorkflowChangedError       WORKFLOW_CHANGED
 *     ├── InvalidDataError               (fieldViolations)
 *     │   ├── InvalidResumeDataError     INVALID_RESUME_DATA
 *     │   ├── InvalidInputError          INVALID_INPUT
 *     │   └── InvalidArgumentError       INVALID_ARGUMENT
 *     ├── ConflictError
 *     │   ├── ResumeConflictError        RESUME_CONFLICT
 *     │   ├── VersionMismatchError       VERSION_MISMATCH
 *     │   └── RunChangedError            RUN_CHANGED
 *     ├── ResourceExhaustedError
 *     │   └── ResponseTooLargeError      RESPONSE_TOO_LARGE (size, limit, limitOf)
 *     ├── UnavailableError
 *     │   ├── StoreUnavailableError      STORE_UNAVAILABLE
 *     │   └── ServerDrainingError        SERVER_DRAINING (afterSequence)
 *     ├── UnauthenticatedError           UNAUTHENTICATED
 *     ├── PermissionDeniedError          PERMISSION_DENIED
 *     └── InternalError                  INTERNAL
 *
 * The Python client's names for two of the code classes are aliases here: `FailedPreconditionError`
 * (PreconditionError) and `AbortedError` (ConflictError). Its `InvalidArgumentError` is this
 * client's `InvalidDataError`: here `InvalidArgumentError` is the INVALID_ARGUMENT reason only.
 *
 * A reason this client does not know yet still gets the class of its status code (an
 * unknown FAILED_PRECONDITION reason is a `PreconditionError`), and `reason` always holds
 * the server's string, so `switch (err.reason)` works as a discriminator too.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { SuspendedStepsDetailSchema } from "./gen/waystation/v1/errordetails_pb.js";
import type { ResumeLabel, StepPath } from "./gen/waystation/v1/message_pb.js";

export { Code, ConnectError };

/** One problem with one field of a request, e.g. `resume_data.approved`. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/** What a `WaystationError` is made of; `WaystationError.from` builds it from a ConnectError. */
export interface WaystationErrorInit {
  code: Code;
  message: string;
  reason?: string;
  domain?: string;
  metadata?: Record<string, string>;
  fieldViolations?: FieldViolation[];
  suspended?: StepPath[];
  resumeLabels?: Record<string, ResumeLabel>;
  cause?: unknown;
}

/** Every error thrown by a `WaystationClient` call. */
export class WaystationError extends Error {
  /** The gRPC status code (Connect's `Code`, same numbers as gRPC). */
  readonly code: Code;
  /** ErrorInfo.reason, e.g. "RUN_NOT_SUSPENDED"; "" when the status carried none. */
  readonly reason: string;
  /** ErrorInfo.domain: "waystation.dev" for the server's own errors. */
  readonly domain: string;
  /** ErrorInfo.metadata: the ids involved (`run_id`, `step_path`, `workflow_id`, ...). */
  readonly metadata: Readonly<Record<string, string>>;
  /** BadRequest field violations, one per problem (invalid input or resume data). */
  readonly fieldViolations: readonly FieldViolation[];
  /** The run's suspended steps, when the server listed them (SuspendedStepsDetail). */
  readonly suspended: readonly StepPath[];
  /** The run's resume labels, when the server listed them (SuspendedStepsDetail). */
  readonly resumeLabels: Readonly<Record<string, ResumeLabel>>;

  constructor(init: WaystationErrorInit) {
    super(init.message, { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.reason = init.reason ?? "";
    this.domain = init.domain ?? "";
    this.metadata = init.metadata ?? {};
    this.fieldViolations = init.fieldViolations ?? [];
    this.suspended = init.suspended ?? [];
    this.resumeLabels = init.resumeLabels ?? {};
  }

  /** The run the error is about (metadata `run_id`), when there is one. */
  get runId(): string | undefined {
    return this.metadata["run_id"];
  }

  /** The step path's text form (metadata `step_path`), when there is one. */
  get stepPath(): string | undefined {
    return this.metadata["step_path"];
  }

  /** The typed error for anything a Connect call threw (a WaystationError passes through). */
  static from(reason: unknown): WaystationError {
    if (reason instanceof WaystationError) return reason;
    return decode(ConnectError.from(reason));
  }
}

export class NotFoundError extends WaystationError {}
export class RunNotFoundError extends NotFoundError {}
export class WorkflowNotFoundError extends NotFoundError {}

export class AlreadyExistsError extends WaystationError {}
export class RunAlreadyExistsError extends AlreadyExistsError {}

export class PreconditionError extends WaystationError {}
/** The Python client's name for `PreconditionError` (FAILED_PRECONDITION): the same class. */
export const FailedPreconditionError = PreconditionError;
export type FailedPreconditionError = PreconditionError;
export class RunNotSuspendedError extends PreconditionError {}
export class StepNotSuspendedError extends PreconditionError {}
export class StepAmbiguousError extends PreconditionError {}
export class LabelNotFoundError extends PreconditionError {}
export class ForeachIndexNotSuspendedError extends PreconditionError {}
export class RunNotActiveError extends PreconditionError {}
export class RunActiveError extends PreconditionError {}
/**
 * A time travel to a step after a suspended one (metadata `suspended_step_path`): the run would
 * stop at that suspension again. Resume it, or time-travel to it.
 */
export class EarlierStepSuspendedError extends PreconditionError {}
/**
 * A resume of a run that its workflow as deployed now cannot continue (metadata `run_id`,
 * `workflow_id`, `step_path`): the step it waits in is gone, steps were added or moved before
 * it, or its stored input fails the new schemas. The run waits as it is: deploy the workflow as
 * it was, time-travel it to a step, or cancel it (docs/workflows.md, "Changing a workflow while
 * runs wait").
 */
export class WorkflowChangedError extends PreconditionError {}

export class InvalidDataError extends WaystationError {}
export class InvalidResumeDataError extends InvalidDataError {}
export class InvalidInputError extends InvalidDataError {}
export class InvalidArgumentError extends InvalidDataError {}

export class ConflictError extends WaystationError {}
/** The Python client's name for `ConflictError` (ABORTED): the same class. */
export const AbortedError = ConflictError;
export type AbortedError = ConflictError;
export class ResumeConflictError extends ConflictError {}
export class VersionMismatchError extends ConflictError {}
export class RunChangedError extends ConflictError {}

export class ResourceExhaustedError extends WaystationError {}
/**
 * The answer was larger than a message limit: the server's `--max-message-bytes`, or this
 * client's `readMaxBytes` (`limitOf` says which). The server made the answer, so a call that
 * changes a run took effect: read the run with `getRun` (without `includeState`), or raise the
 * limit. `runId` names the run when the server refused (the client cannot read a refused answer).
 */
export class ResponseTooLargeError extends ResourceExhaustedError {
  /** The answer's size in bytes (metadata `size`). */
  get size(): number | undefined {
    return numberOf(this.metadata["size"]);
  }

  /** The limit in bytes that the answer broke (metadata `limit`). */
  get limit(): number | undefined {
    return numberOf(this.metadata["limit"]);
  }

  /** Whose limit the answer broke: "server", or "client" (this client's `readMaxBytes`). */
  get limitOf(): string {
    return this.metadata["limit_of"] ?? "server";
  }
}

export class UnavailableError extends WaystationError {}
export class StoreUnavailableError extends UnavailableError {}
/**
 * The server is draining (a rollout) and ended this `watchRun` once it had sent every stored
 * event: watch again (another replica answers) with `afterSequence`, and no event is missed or
 * repeated.
 */
export class ServerDrainingError extends UnavailableError {
  /** The sequence to watch again after (metadata `after_sequence`), as `watchRun` takes it. */
  get afterSequence(): bigint | undefined {
    const text = this.metadata["after_sequence"];
    return text !== undefined && /^\d+$/.test(text) ? BigInt(text) : undefined;
  }
}

export class UnauthenticatedError extends WaystationError {}
export class PermissionDeniedError extends WaystationError {}
export class InternalError extends WaystationError {}

function numberOf(text: string | undefined): number | undefined {
  return text !== undefined && /^\d+$/.test(text) ? Number(text) : undefined;
}

type ErrorClass = new (init: WaystationErrorInit) => WaystationError;

const BY_REASON: Readonly<Record<string, ErrorClass>> = {
  RUN_NOT_FOUND: RunNotFoundError,
  WORKFLOW_NOT_FOUND: WorkflowNotFoundError,
  RUN_ALREADY_EXISTS: RunAlreadyExistsError,
  RUN_NOT_SUSPENDED: RunNotSuspendedError,
  STEP_NOT_SUSPENDED: StepNotSuspendedError,
  STEP_AMBIGUOUS: StepAmbiguousError,
  LABEL_NOT_FOUND: LabelNotFoundError,
  FOREACH_INDEX_NOT_SUSPENDED: ForeachIndexNotSuspendedError,
  RUN_NOT_ACTIVE: RunNotActiveError,
  RUN_ACTIVE: RunActiveError,
  EARLIER_STEP_SUSPENDED: EarlierStepSuspendedError,
  WORKFLOW_CHANGED: WorkflowChangedError,
  INVALID_RESUME_DATA: InvalidResumeDataError,
  INVALID_INPUT: InvalidInputError,
  INVALID_ARGUMENT: InvalidArgumentError,
  RESUME_CONFLICT: ResumeConflictError,
  VERSION_MISMATCH: VersionMismatchError,
  RUN_CHANGED: RunChangedError,
  RESPONSE_TOO_LARGE: ResponseTooLargeError,
  STORE_UNAVAILABLE: StoreUnavailableError,
  SERVER_DRAINING: ServerDrainingError,
  UNAUTHENTICATED: UnauthenticatedError,
  PERMISSION_DENIED: PermissionDeniedError,
  INTERNAL: InternalError,
};

const BY_CODE: Partial<Record<Code, ErrorClass>> = {
  [Code.NotFound]: NotFoundError,
  [Code.AlreadyExists]: AlreadyExistsError,
  [Code.FailedPrecondition]: PreconditionError,
  [Code.InvalidArgument]: InvalidDataError,
  [Code.Aborted]: ConflictError,
  [Code.ResourceExhausted]: ResourceExhaustedError,
  [Code.Unavailable]: UnavailableError,
  [Code.Unauthenticated]: UnauthenticatedError,
  [Code.PermissionDenied]: PermissionDeniedError,
  [Code.Internal]: InternalError,
};

/** How Connect reports an answer over the transport's `readMaxBytes`. */
const RECEIVE_LIMIT = /^message size (?:(\d+) )?is larger than configured readMaxBytes (\d+)$/;

/**
 * For an answer that this client's `readMaxBytes` refused, the error the server gives an answer
 * over its own limit (RESPONSE_TOO_LARGE), saying that the call took effect, which Connect's
 * does not; undefined for any other error.
 */
function receiveLimitError(err: ConnectError): WaystationError | undefined {
  const found = err.code === Code.ResourceExhausted ? RECEIVE_LIMIT.exec(err.rawMessage) : null;
  if (!found || err.details.length > 0) return undefined;
  const [, size, limit = ""] = found;
  const answer = size === undefined ? "the answer is more" : `the answer is ${size} bytes, more`;
  return new ResponseTooLargeError({
    code: Code.ResourceExhausted,
    message:
      `${answer} than this client's ${limit}-byte receive limit (readMaxBytes); the server` +
      " made it, so a call that changes a run took effect: read the run with getRun (without" +
      " includeState), or raise the limit",
    reason: "RESPONSE_TOO_LARGE",
    domain: "waystation.dev",
    metadata: { ...(size === undefined ? {} : { size }), limit, limit_of: "client" },
    cause: err,
  });
}

function decode(err: ConnectError): WaystationError {
  const limited = receiveLimitError(err);
  if (limited) return limited;
  const info = err.findDetails(ErrorInfoSchema)[0];
  const violations = err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
  const steps = err.findDetails(SuspendedStepsDetailSchema)[0];
  const reason = info?.reason ?? "";
  const cls = BY_REASON[reason] ?? BY_CODE[err.code] ?? WaystationError;
  return new cls({
    code: err.code,
    message: err.rawMessage,
    reason,
    domain: info?.domain ?? "",
    metadata: { ...info?.metadata },
    fieldViolations: violations.map((v) => ({ field: v.field, description: v.description })),
    suspended: steps?.suspended ?? [],
    resumeLabels: { ...steps?.resumeLabels },
    cause: err,
  });
}
