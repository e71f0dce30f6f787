package dev.waystation.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.waystation.v1.RunEventType;
import dev.waystation.v1.RunStatus;
import dev.waystation.v1.WorkflowResult;
import io.grpc.Status;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The client against a real server at {@code WAYSTATION_ADDRESS}; run it through {@code
 * scripts/with_server.sh clients/java/test.sh}, which starts one serving {@code
 * waystation.examples} and {@code tests.support.workflows}.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class EndToEndTest {
  private static final Map<String, Object> DOCUMENT =
      Map.of("document_id", "d-1", "title", "T", "body", "a b");

  private static WaystationClient connection;

  @BeforeAll
  static void connect() {
    String address = System.getenv("WAYSTATION_ADDRESS");
    if (address == null || address.isBlank()) {
      fail(
          "WAYSTATION_ADDRESS is not set: these tests need a real server. From the repo root run"
              + " `scripts/with_server.sh clients/java/test.sh`, which starts one and exports it.");
    }
    connection = WaystationClient.connect(address);
  }

  @AfterAll
  static void close() {
    if (connection != null) {
      connection.close();
    }
  }

  /** Every call of a test gets a deadline, so a hung server fails the test instead of CI. */
  private static WaystationClient client() {
    return connection.withDeadlineAfter(30, TimeUnit.SECONDS);
  }

  @Test
  void documentReviewSuspendsInTheNestedWorkflowAndSucceedsAfterTwoResumes() {
    WorkflowResult started = client().startRun("document-review", DOCUMENT);
    assertEquals(RunStatus.RUN_STATUS_SUSPENDED, started.getStatus());
    assertEquals(List.of("review", "legal-review"), started.getSuspended(0).getSegmentsList());
    String legal = StepPaths.toText(started.getSuspended(0));
    assertEquals("review.legal-review", legal);
    Map<String, Object> payload = Values.toMap(started.getSuspendPayloadOrThrow(legal));
    assertEquals("legal", payload.get("reviewer_role"));

    WorkflowResult afterLegal =
        client()
            .resumeRun(
                started.getRunId(),
                Map.of("approved", true, "reviewer", "lee"),
                started.getSuspended(0));
    assertEquals(RunStatus.RUN_STATUS_SUSPENDED, afterLegal.getStatus());
    assertEquals(StepPaths.of("review.editor-signoff"), afterLegal.getSuspended(0));
    assertEquals(
        "editor",
        Values.toMap(afterLegal.getSuspendPayloadOrThrow("review.editor-signoff"))
            .get("reviewer_role"));

    WorkflowResult done =
        client()
            .resumeRun(
                started.getRunId(),
                Map.of("signed_off", true, "editor", "ed"),
                StepPaths.ofSegments("review", "editor-signoff"));
    assertEquals(RunStatus.RUN_STATUS_SUCCESS, done.getStatus());
    Map<String, Object> publication = Values.toMap(done.getResult());
    assertEquals(true, publication.get("published"));
    assertEquals(List.of("lee", "ed"), publication.get("reviewers"));
    assertTrue(done.getVersion() > started.getVersion());

    assertEquals(RunStatus.RUN_STATUS_SUCCESS, client().getRun(started.getRunId()).getStatus());
  }

  @Test
  void invalidResumeDataIsRejectedWithDecodedFieldViolationsAndTheRunStaysSuspended() {
    WorkflowResult started = client().startRun("document-review", DOCUMENT);

    InvalidResumeDataException error =
        assertThrows(
            InvalidResumeDataException.class,
            () ->
                client()
                    .resumeRun(
                        started.getRunId(), Map.of("approved", "nope"), "review.legal-review"));

    assertEquals(Status.Code.INVALID_ARGUMENT, error.code());
    assertEquals("INVALID_RESUME_DATA", error.reason());
    assertEquals("waystation.dev", error.domain());
    Set<String> fields =
        error.fieldViolations().stream().map(FieldViolation::field).collect(Collectors.toSet());
    assertTrue(
        fields.containsAll(Set.of("resume_data.approved", "resume_data.reviewer")),
        "field violations: " + error.fieldViolations());
    assertEquals(
        RunStatus.RUN_STATUS_SUSPENDED, client().getRun(started.getRunId()).getStatus());
  }

  @Test
  void aTraceparentSentInMetadataComesBackAsTheResultsTraceId() {
    SecureRandom random = new SecureRandom();
    String traceId = HexFormat.of().formatHex(random.generateSeed(16));
    String spanId = HexFormat.of().formatHex(random.generateSeed(8));

    WorkflowResult result =
        client()
            .withTraceparent("00-" + traceId + "-" + spanId + "-01")
            .startRun("document-review", DOCUMENT);

    assertEquals(traceId, result.getTraceId());
  }

  @Test
  void aDeadlineThatExpiresIsReportedAsDeadlineExceeded() throws IOException {
    Path log = tempLog();

    WaystationException error =
        assertThrows(
            WaystationException.class,
            () ->
                connection
                    .withDeadlineAfter(300, TimeUnit.MILLISECONDS)
                    .startRun("slow", Map.of("log", log.toString(), "seconds", 2)));

    assertEquals(Status.Code.DEADLINE_EXCEEDED, error.code());
    assertEquals("", error.reason());
  }

  @Test
  void resumingAFinishedRunIsRunNotSuspendedAndAnUnknownRunIsRunNotFound() {
    WorkflowResult started = client().startRun("document-review", DOCUMENT);
    client().resumeRun(started.getRunId(), Map.of("approved", false, "reviewer", "lee"));
    // Legal said no: editor-signoff passes through and the run finished.

    RunNotSuspendedException notSuspended =
        assertThrows(
            RunNotSuspendedException.class,
            () -> client().resumeRun(started.getRunId(), Map.of("approved", true)));
    assertEquals(Status.Code.FAILED_PRECONDITION, notSuspended.code());
    assertEquals(started.getRunId(), notSuspended.runId());

    WaystationException unknown =
        assertThrows(
            WaystationException.class, () -> client().getRun("no-such-run-" + System.nanoTime()));
    assertInstanceOf(RunNotFoundException.class, unknown);
    assertEquals(Status.Code.NOT_FOUND, unknown.code());
  }

  @Test
  void aWatchClosedEarlyCancelsItsStreamAndTheClientThenClosesAtOnce() {
    WaystationClient own = WaystationClient.connect(System.getenv("WAYSTATION_ADDRESS"));
    // SUSPENDED is no final state: the server keeps the stream open after RUN_SETTLED.
    WorkflowResult started = own.startRun("document-review", DOCUMENT);
    RunWatch watch = own.watchRun(started.getRunId(), 0);
    try (watch) {
      while (watch.next().getType() != RunEventType.RUN_EVENT_TYPE_RUN_SETTLED) {
        // the events before the run suspended
      }
    }
    assertFalse(watch.hasNext());
    assertThrows(NoSuchElementException.class, watch::next);
    watch.close(); // again: nothing happens

    // The channel waits up to 5 s for open calls: a prompt close shows that none is left.
    long began = System.nanoTime();
    own.close();
    Duration closing = Duration.ofNanos(System.nanoTime() - began);
    assertTrue(closing.compareTo(Duration.ofSeconds(1)) < 0, "close() took " + closing);
  }

  @Test
  @Timeout(value = 15, unit = TimeUnit.SECONDS)
  void aWatchClosedFromAnotherThreadEndsTheHasNextThatWaits() throws InterruptedException {
    WorkflowResult started = client().startRun("document-review", DOCUMENT);
    RunWatch watch = connection.watchRun(started.getRunId(), 0);
    Thread closer = new Thread(() -> sleepThenClose(watch));
    closer.start();
    int events = 0;
    while (watch.hasNext()) { // blocks after the replayed events, until close()
      watch.next();
      events++;
    }
    closer.join();
    assertTrue(events >= 1, "events: " + events);
  }

  private static void sleepThenClose(RunWatch watch) {
    try {
      Thread.sleep(500);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    watch.close();
  }

  /** A log file for the test workflows, in with_server.sh's temp dir when it gives one. */
  private static Path tempLog() throws IOException {
    String dir = System.getenv("WAYSTATION_TEST_LOG_DIR");
    Path file =
        dir == null || dir.isBlank()
            ? Files.createTempFile("waystation-java-", ".log")
            : Files.createTempFile(Path.of(dir), "java-", ".log");
    file.toFile().deleteOnExit();
    return file;
  }
}
