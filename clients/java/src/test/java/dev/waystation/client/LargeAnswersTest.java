package dev.waystation.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.waystation.v1.ListRunsRequest;
import dev.waystation.v1.RunStatus;
import dev.waystation.v1.StartRunRequest;
import dev.waystation.v1.WorkflowResult;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Answers larger than grpc-java's default 4 MiB receive limit, from a server of this class's own
 * ({@link TestServer}) whose {@code --max-message-bytes} is raised to 16 MiB: a client that
 * {@link WaystationClient#connect} made takes them, and one with a lower limit of its own says
 * that the call took effect.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class LargeAnswersTest {
  /** About 6 MB: an answer carries it twice (step output and result), under 16 MiB. */
  private static final int LARGE = 6_000_000;

  private static final int CLIENT_LIMIT = 1024 * 1024;

  @TempDir static Path dir;
  private static TestServer server;
  private static WaystationClient connection;

  @BeforeAll
  static void start() throws IOException, InterruptedException {
    server = TestServer.start(dir, "--max-message-bytes", String.valueOf(16 * 1024 * 1024));
    connection = server.client;
  }

  @AfterAll
  static void stop() throws InterruptedException {
    if (server != null) {
      server.close();
    }
  }

  @Test
  void aClientThatConnectMadeTakesAnAnswerOverGrpcsDefaultLimit() {
    WaystationClient client = connection.withDeadlineAfter(30, TimeUnit.SECONDS);
    WorkflowResult done = client.startRun("inflate", Map.of("bytes", LARGE));

    assertEquals(RunStatus.RUN_STATUS_SUCCESS, done.getStatus());
    assertEquals(LARGE, ((String) Values.toMap(done.getResult()).get("blob")).length());
  }

  @Test
  void anAnswerOverTheClientsOwnLimitSaysSoAndTheCallTookEffect() {
    WaystationClient limited =
        connection.withDeadlineAfter(30, TimeUnit.SECONDS).withMaxReceiveMessageBytes(CLIENT_LIMIT);
    String runId = "java-inflate-" + UUID.randomUUID();
    StartRunRequest request =
        StartRunRequest.newBuilder()
            .setWorkflowId("inflate")
            .setRunId(runId)
            .setInputData(Values.of(Map.of("bytes", 2 * CLIENT_LIMIT)))
            .build();

    ResponseTooLargeException tooLarge =
        assertThrows(ResponseTooLargeException.class, () -> limited.startRun(request));

    assertEquals("client", tooLarge.limitOf());
    assertEquals(CLIENT_LIMIT, tooLarge.limit());
    assertTrue(tooLarge.size() > 2 * CLIENT_LIMIT, "size " + tooLarge.size());
    assertTrue(tooLarge.getMessage().contains("took effect"), tooLarge.getMessage());
    // It did: the run is listed, finished (a listing carries no result).
    ListRunsRequest inflated = ListRunsRequest.newBuilder().setWorkflowId("inflate").build();
    assertTrue(
        limited.listRuns(inflated).getRunsList().stream()
            .anyMatch(
                r -> r.getRunId().equals(runId) && r.getStatus() == RunStatus.RUN_STATUS_SUCCESS));
    try (RunWatch events = limited.watchRun(runId, 0)) {
      assertThrows(ResponseTooLargeException.class, () -> events.forEachRemaining(e -> {}));
    }
  }
}
