package dev.waystation.client;

import dev.waystation.v1.ResumeLabel;
import dev.waystation.v1.StepPath;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.List;
import java.util.Map;

/**
 * A failed call, decoded from its gRPC status and the status details the server attached: a
 * {@code google.rpc.ErrorInfo} (stable {@link #reason()}, ids in {@link #metadata()}), a {@code
 * google.rpc.BadRequest} ({@link #fieldViolations()}) and a {@code SuspendedStepsDetail} ({@link
 * #suspended()}, {@link #resumeLabels()}).
 *
 * <p>Each server reason has a subclass, so callers can catch what they handle:
 *
 * <pre>
 * WaystationException                     any failed call (also DEADLINE_EXCEEDED, UNAVAILABLE)
 * ├── RunNotFoundException                NOT_FOUND            RUN_NOT_FOUND
 * ├── WorkflowNotFoundException           NOT_FOUND            WORKFLOW_NOT_FOUND
 * ├── RunAlreadyExistsException           ALREADY_EXISTS       RUN_ALREADY_EXISTS
 * ├── RunNotSuspendedException            FAILED_PRECONDITION  RUN_NOT_SUSPENDED
 * ├── StepNotSuspendedException           FAILED_PRECONDITION  STEP_NOT_SUSPENDED
 * ├── StepAmbiguousException              FAILED_PRECONDITION  STEP_AMBIGUOUS
 * ├── LabelNotFoundException              FAILED_PRECONDITION  LABEL_NOT_FOUND
 * ├── ForeachIndexNotSuspendedException   FAILED_PRECONDITION  FOREACH_INDEX_NOT_SUSPENDED
 * ├── RunNotActiveException               FAILED_PRECONDITION  RUN_NOT_ACTIVE
 * ├── RunActiveException                  FAILED_PRECONDITION  RUN_ACTIVE
 * ├── EarlierStepSuspendedException       FAILED_PRECONDITION  EARLIER_STEP_SUSPENDED
 * ├── WorkflowChangedException            FAILED_PRECONDITION  WORKFLOW_CHANGED
 * ├── InvalidResumeDataException          INVALID_ARGUMENT     INVALID_RESUME_DATA
 * ├── InvalidInputException               INVALID_ARGUMENT     INVALID_INPUT
 * ├── InvalidArgumentException            INVALID_ARGUMENT     INVALID_ARGUMENT
 * ├── ResumeConflictException             ABORTED              RESUME_CONFLICT
 * ├── VersionMismatchException            ABORTED              VERSION_MISMATCH
 * ├── RunChangedException                 ABORTED              RUN_CHANGED
 * ├── ResponseTooLargeException           RESOURCE_EXHAUSTED   RESPONSE_TOO_LARGE
 * ├── StoreUnavailableException           UNAVAILABLE          STORE_UNAVAILABLE
 * ├── ServerDrainingException             UNAVAILABLE          SERVER_DRAINING
 * ├── UnauthenticatedException            UNAUTHENTICATED      UNAUTHENTICATED
 * ├── PermissionDeniedException           PERMISSION_DENIED    PERMISSION_DENIED
 * └── InternalException                   INTERNAL             INTERNAL
 * </pre>
 *
 * <p>The cause is the {@link StatusRuntimeException} that grpc-java raised.
 */
public class WaystationException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final transient StatusDetails details;

  WaystationException(StatusDetails details) {
    super(details.message(), details.cause());
    this.details = details;
  }

  /**
   * The typed exception for a failed call: the subclass for the server's reason, else this
   * class. An exception that is not a gRPC status error becomes UNKNOWN.
   */
  public static WaystationException from(Throwable error) {
    return StatusDetails.decode(error).toException();
  }

  /** The gRPC status code, e.g. {@code Status.Code.DEADLINE_EXCEEDED}. */
  public Status.Code code() {
    return details.status().getCode();
  }

  /** The gRPC status (code and description). */
  public Status status() {
    return details.status();
  }

  /** The server's description of the problem, without the code. */
  public String description() {
    String description = details.status().getDescription();
    return description == null ? "" : description;
  }

  /** The stable UPPER_SNAKE reason from the ErrorInfo, or "" when there is none. */
  public String reason() {
    return details.reason();
  }

  /** The ErrorInfo domain ("waystation.dev" for the server's errors), or "". */
  public String domain() {
    return details.domain();
  }

  /** The ErrorInfo metadata: the ids concerned ({@code run_id}, {@code step_path}, ...). */
  public Map<String, String> metadata() {
    return details.metadata();
  }

  /** The run concerned ({@code metadata().get("run_id")}), or "". */
  public String runId() {
    return details.metadata().getOrDefault("run_id", "");
  }

  /** One entry per problem with the request's data (INVALID_ARGUMENT), else empty. */
  public List<FieldViolation> fieldViolations() {
    return details.fieldViolations();
  }

  /** Every suspended leaf of the run, when the server listed them (a refused resume). */
  public List<StepPath> suspended() {
    return details.suspended();
  }

  /** The run's resume labels, when the server listed them (a refused resume). */
  public Map<String, ResumeLabel> resumeLabels() {
    return details.resumeLabels();
  }

  /** The full {@code google.rpc.Status}, or null when the server attached no details. */
  public com.google.rpc.Status statusProto() {
    return details.statusProto();
  }

  /** The metadata value of {@code key} as a number, or -1 when it is missing or no number. */
  final long metadataNumber(String key) {
    try {
      return Long.parseLong(metadata().getOrDefault(key, "-1"));
    } catch (NumberFormatException e) {
      return -1;
    }
  }
}
