package dev.waystation.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import dev.waystation.v1.ResumeLabel;
import dev.waystation.v1.StepPath;
import dev.waystation.v1.SuspendedStepsDetail;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The one place that turns a gRPC status into a typed exception: {@link #decode} reads the
 * details, {@link #toException} picks the subclass for the reason from {@link #BY_REASON}.
 */
record StatusDetails(
    Status status,
    Throwable cause,
    com.google.rpc.Status statusProto,
    String reason,
    String domain,
    Map<String, String> metadata,
    List<FieldViolation> fieldViolations,
    List<StepPath> suspended,
    Map<String, ResumeLabel> resumeLabels) {

  /** The ErrorInfo domain of the server's errors; other domains get no subclass. */
  static final String DOMAIN = "waystation.dev";

  private static final Map<String, Function<StatusDetails, WaystationException>> BY_REASON =
      Map.ofEntries(
          Map.entry("RUN_NOT_FOUND", RunNotFoundException::new),
          Map.entry("WORKFLOW_NOT_FOUND", WorkflowNotFoundException::new),
          Map.entry("RUN_ALREADY_EXISTS", RunAlreadyExistsException::new),
          Map.entry("RUN_NOT_SUSPENDED", RunNotSuspendedException::new),
          Map.entry("STEP_NOT_SUSPENDED", StepNotSuspendedException::new),
          Map.entry("STEP_AMBIGUOUS", StepAmbiguousException::new),
          Map.entry("LABEL_NOT_FOUND", LabelNotFoundException::new),
          Map.entry("FOREACH_INDEX_NOT_SUSPENDED", ForeachIndexNotSuspendedException::new),
          Map.entry("RUN_NOT_ACTIVE", RunNotActiveException::new),
          Map.entry("RUN_ACTIVE", RunActiveException::new),
          Map.entry("EARLIER_STEP_SUSPENDED", EarlierStepSuspendedException::new),
          Map.entry("WORKFLOW_CHANGED", WorkflowChangedException::new),
          Map.entry("INVALID_RESUME_DATA", InvalidResumeDataException::new),
          Map.entry("INVALID_INPUT", InvalidInputException::new),
          Map.entry("INVALID_ARGUMENT", InvalidArgumentException::new),
          Map.entry("RESUME_CONFLICT", ResumeConflictException::new),
          Map.entry("VERSION_MISMATCH", VersionMismatchException::new),
          Map.entry("RUN_CHANGED", RunChangedException::new),
          Map.entry("RESPONSE_TOO_LARGE", ResponseTooLargeException::new),
          Map.entry("STORE_UNAVAILABLE", StoreUnavailableException::new),
          Map.entry("SERVER_DRAINING", ServerDrainingException::new),
          Map.entry("UNAUTHENTICATED", UnauthenticatedException::new),
          Map.entry("PERMISSION_DENIED", PermissionDeniedException::new),
          Map.entry("INTERNAL", InternalException::new));

  /**
   * How grpc-java reports an answer over the channel's receive limit. A request over the
   * server's limit reads "SERVER: Received message larger than max ..." instead.
   */
  private static final Pattern RECEIVE_LIMIT =
      Pattern.compile("gRPC message exceeds maximum size (\\d+): (\\d+)");

  static StatusDetails decode(Throwable error) {
    Status status = Status.fromThrowable(error);
    com.google.rpc.Status proto = StatusProto.fromThrowable(error);
    com.google.rpc.Status limited =
        proto == null || proto.getDetailsCount() == 0 ? receiveLimitStatus(status) : null;
    if (limited != null) {
      proto = limited;
      status = Status.RESOURCE_EXHAUSTED.withDescription(limited.getMessage());
    }
    ErrorInfo info = ErrorInfo.getDefaultInstance();
    BadRequest badRequest = BadRequest.getDefaultInstance();
    SuspendedStepsDetail suspended = SuspendedStepsDetail.getDefaultInstance();
    for (Any detail : proto == null ? List.<Any>of() : proto.getDetailsList()) {
      info = unpack(detail, ErrorInfo.class, info);
      badRequest = unpack(detail, BadRequest.class, badRequest);
      suspended = unpack(detail, SuspendedStepsDetail.class, suspended);
    }
    return new StatusDetails(
        status,
        error,
        proto,
        info.getReason(),
        info.getDomain(),
        Map.copyOf(info.getMetadataMap()),
        badRequest.getFieldViolationsList().stream()
            .map(v -> new FieldViolation(v.getField(), v.getDescription()))
            .toList(),
        List.copyOf(suspended.getSuspendedList()),
        Map.copyOf(suspended.getResumeLabelsMap()));
  }

  WaystationException toException() {
    Function<StatusDetails, WaystationException> make =
        DOMAIN.equals(domain) ? BY_REASON.get(reason) : null;
    return make == null ? new WaystationException(this) : make.apply(this);
  }

  /** "CODE: description" as grpc-java writes it, plus the reason when there is one. */
  String message() {
    String description = status.getDescription();
    String text = status.getCode() + (description == null ? "" : ": " + description);
    return reason.isEmpty() ? text : text + " [" + reason + "]";
  }

  /**
   * For an answer that this client's receive limit refused, the status that the server gives
   * an answer over its own limit (RESPONSE_TOO_LARGE), saying that the call took effect, which
   * grpc-java's does not; null for any other status.
   */
  private static com.google.rpc.Status receiveLimitStatus(Status status) {
    String description = status.getDescription();
    Matcher found =
        status.getCode() == Status.Code.RESOURCE_EXHAUSTED && description != null
            ? RECEIVE_LIMIT.matcher(description)
            : null;
    if (found == null || !found.matches()) {
      return null;
    }
    String limit = found.group(1);
    String size = found.group(2);
    ErrorInfo info =
        ErrorInfo.newBuilder()
            .setReason("RESPONSE_TOO_LARGE")
            .setDomain(DOMAIN)
            .putAllMetadata(Map.of("size", size, "limit", limit, "limit_of", "client"))
            .build();
    return com.google.rpc.Status.newBuilder()
        .setCode(Status.Code.RESOURCE_EXHAUSTED.value())
        .setMessage(
            "the answer is "
                + size
                + " bytes, more than this client's "
                + limit
                + "-byte receive limit (withMaxReceiveMessageBytes); the server made it, so a"
                + " call that changes a run took effect: read the run with getRun (without"
                + " include_state), or raise the limit")
        .addDetails(Any.pack(info))
        .build();
  }

  private static <T extends com.google.protobuf.Message> T unpack(
      Any detail, Class<T> type, T otherwise) {
    if (!detail.is(type)) {
      return otherwise;
    }
    try {
      return detail.unpack(type);
    } catch (InvalidProtocolBufferException e) {
      return otherwise; // a malformed detail must not hide the status itself
    }
  }
}
