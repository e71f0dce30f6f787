/**
 * @waystation/client: the TypeScript client of the Waystation workflow engine.
 *
 *     const client = createWaystationClient("127.0.0.1:50051");
 *     const run = await client.startRun({ workflowId: "document-review", inputData: toValue({...}) });
 *     await client.resumeRun({ runId: run.runId, step: run.suspended[0], resumeData: toValue({...}) });
 *
 * The generated messages and enums of `waystation.v1` are re-exported from here.
 */

export {
  createWaystationClient,
  type WaystationClient,
  type WaystationClientOptions,
} from "./client.js";
export {
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
  type FieldViolation,
  type WaystationErrorInit,
} from "./errors.js";
export { formatStepPath, stepPath } from "./paths.js";
export { fromValue, toValue, type JsonValue } from "./values.js";
export * from "./gen/waystation/v1/enums_pb.js";
export * from "./gen/waystation/v1/errordetails_pb.js";
export * from "./gen/waystation/v1/message_pb.js";
export * from "./gen/waystation/v1/request_response_pb.js";
export * from "./gen/waystation/v1/service_pb.js";
