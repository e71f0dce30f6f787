package dev.waystation.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.rpc.ErrorInfo;
import io.grpc.Status;
import io.grpc.Status.Code;
import io.grpc.protobuf.StatusProto;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The reason -> subclass mapping, from statuses built here (no server). */
class WaystationExceptionTest {
  private record Row(String reason, Code code, Class<? extends WaystationException> type) {}

  /** Every reason of the server's table (docs/api.md), its code and its subclass. */
  private static final List<Row> SERVER_REASONS =
      List.of(
          new Row("RUN_NOT_FOUND", Code.NOT_FOUND, RunNotFoundException.class),
          new Row("WORKFLOW_NOT_FOUND", Code.NOT_FOUND, WorkflowNotFoundException.class),
          new Row("RUN_ALREADY_EXISTS", Code.ALREADY_EXISTS, RunAlreadyExistsException.class),
          new Row("RUN_NOT_SUSPENDED", Code.FAILED_PRECONDITION, RunNotSuspendedException.class),
          new Row("STEP_NOT_SUSPENDED", Code.FAILED_PRECONDITION, StepNotSuspendedException.class),
          new Row("STEP_AMBIGUOUS", Code.FAILED_PRECONDITION, StepAmbiguousException.class),
          new Row("LABEL_NOT_FOUND", Code.FAILED_PRECONDITION, LabelNotFoundException.class),
          new Row(
              "FOREACH_INDEX_NOT_SUSPENDED",
              Code.FAILED_PRECONDITION,
              ForeachIndexNotSuspendedException.class),
          new Row("RUN_NOT_ACTIVE", Code.FAILED_PRECONDITION, RunNotActiveException.class),
          new Row("RUN_ACTIVE", Code.FAILED_PRECONDITION, RunActiveException.class),
          new Row(
              "EARLIER_STEP_SUSPENDED",
              Code.FAILED_PRECONDITION,
              EarlierStepSuspendedException.class),
          new Row("WORKFLOW_CHANGED", Code.FAILED_PRECONDITION, WorkflowChangedException.class),
          new Row("INVALID_RESUME_DATA", Code.INVALID_ARGUMENT, InvalidResumeDataException.class),
          new Row("INVALID_INPUT", Code.INVALID_ARGUMENT, InvalidInputException.class),
          new Row("INVALID_ARGUMENT", Code.INVALID_ARGUMENT, InvalidArgumentException.class),
          new Row("RESUME_CONFLICT", Code.ABORTED, ResumeConflictException.class),
          new Row("VERSION_MISMATCH", Code.ABORTED, VersionMismatchException.class),
          new Row("RUN_CHANGED", Code.ABORTED, RunChangedException.class),
          new Row("RESPONSE_TOO_LARGE", Code.RESOURCE_EXHAUSTED, ResponseTooLargeException.class),
          new Row("STORE_UNAVAILABLE", Code.UNAVAILABLE, StoreUnavailableException.class),
          new Row("SERVER_DRAINING", Code.UNAVAILABLE, ServerDrainingException.class),
          new Row("UNAUTHENTICATED", Code.UNAUTHENTICATED, UnauthenticatedException.class),
          new Row("PERMISSION_DENIED", Code.PERMISSION_DENIED, PermissionDeniedException.class),
          new Row("INTERNAL", Code.INTERNAL, InternalException.class));

  private static WaystationException refused(
      Code code, String reason, Map<String, String> metadata) {
    ErrorInfo info =
        ErrorInfo.newBuilder()
            .setReason(reason)
            .setDomain("waystation.dev")
            .putAllMetadata(metadata)
            .build();
    com.google.rpc.Status status =
        com.google.rpc.Status.newBuilder()
            .setCode(code.value())
            .setMessage("refused")
            .addDetails(Any.pack(info))
            .build();
    return WaystationException.from(StatusProto.toStatusRuntimeException(status));
  }

  @Test
  void everyServerReasonHasItsSubclass() {
    for (Row row : SERVER_REASONS) {
      WaystationException error = refused(row.code(), row.reason(), Map.of());
      assertSame(row.type(), error.getClass(), row.reason());
      assertEquals(row.code(), error.code(), row.reason());
      assertEquals(row.reason(), error.reason());
    }
  }

  @Test
  void responseTooLargeReadsTheSizesFromTheMetadata() {
    ResponseTooLargeException error =
        (ResponseTooLargeException)
            refused(
                Code.RESOURCE_EXHAUSTED,
                "RESPONSE_TOO_LARGE",
                Map.of("run_id", "r-1", "size", "70000", "limit", "65536"));
    assertEquals("r-1", error.runId());
    assertEquals(70000, error.size());
    assertEquals(65536, error.limit());
    assertEquals("RESOURCE_EXHAUSTED: refused [RESPONSE_TOO_LARGE]", error.getMessage());
    assertEquals("server", error.limitOf());
  }

  @Test
  void serverDrainingNamesTheSequenceToWatchAgainAfter() {
    Map<String, String> metadata = Map.of("run_id", "r-1", "after_sequence", "7");
    WaystationException error = refused(Code.UNAVAILABLE, "SERVER_DRAINING", metadata);
    ServerDrainingException draining = assertInstanceOf(ServerDrainingException.class, error);
    assertEquals(Code.UNAVAILABLE, draining.code());
    assertEquals("r-1", draining.runId());
    assertEquals(7, draining.afterSequence());
    assertEquals("UNAVAILABLE: refused [SERVER_DRAINING]", draining.getMessage());
    ServerDrainingException bare =
        (ServerDrainingException) refused(Code.UNAVAILABLE, "SERVER_DRAINING", Map.of());
    assertEquals(-1, bare.afterSequence());
  }

  @Test
  void anAnswerOverTheClientsReceiveLimitIsResponseTooLargeOfTheClient() {
    String grpcSays = "gRPC message exceeds maximum size 4194304: 10000262";
    Status refused = Status.RESOURCE_EXHAUSTED.withDescription(grpcSays);
    WaystationException error = WaystationException.from(refused.asException());
    ResponseTooLargeException tooLarge = assertInstanceOf(ResponseTooLargeException.class, error);
    assertEquals(Code.RESOURCE_EXHAUSTED, tooLarge.code());
    assertEquals("client", tooLarge.limitOf());
    assertEquals(4194304, tooLarge.limit());
    assertEquals(10000262, tooLarge.size());
    assertEquals("", tooLarge.runId());
    assertTrue(tooLarge.description().contains("receive limit (withMaxReceiveMessageBytes)"));
    assertTrue(tooLarge.getMessage().contains("took effect"), tooLarge.getMessage());
  }

  @Test
  void aRequestOverTheServersLimitStaysAPlainResourceExhausted() {
    // It did not take effect: the server refused it before any handler ran.
    String serverSays = "SERVER: Received message larger than max (5000059 vs. 4194304)";
    Status refused = Status.RESOURCE_EXHAUSTED.withDescription(serverSays);
    WaystationException error = WaystationException.from(refused.asException());
    assertSame(WaystationException.class, error.getClass());
    assertEquals(serverSays, error.description());
    assertEquals("", error.reason());
  }
}
