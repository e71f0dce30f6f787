package dev.waystation.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.waystation.v1.RunEvent;
import dev.waystation.v1.RunEventType;
import dev.waystation.v1.RunStatus;
import dev.waystation.v1.WorkflowResult;
import io.grpc.Status;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A server of the test's own ({@link TestServer}) drained under a watch (SIGTERM, as in a
 * rollout): the watch ends at once with the sequence to watch again after.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class DrainTest {
  @TempDir Path dir;

  @Test
  void aDrainEndsAWatchAtOnceNamingTheSequenceToWatchAgainAfter()
      throws IOException, InterruptedException {
    try (TestServer server = TestServer.start(dir)) {
      WorkflowResult started = server.client.startRun("remember", Map.of());
      assertEquals(RunStatus.RUN_STATUS_SUSPENDED, started.getStatus());
      try (RunWatch watch = server.client.watchRun(started.getRunId(), 0)) {
        RunEvent last = watch.next();
        while (last.getType() != RunEventType.RUN_EVENT_TYPE_RUN_SETTLED) {
          last = watch.next(); // SUSPENDED: the stream stays open after it
        }

        long began = System.nanoTime();
        server.drain();
        ServerDrainingException error = assertThrows(ServerDrainingException.class, watch::hasNext);
        Duration took = Duration.ofNanos(System.nanoTime() - began);

        assertTrue(took.compareTo(Duration.ofSeconds(5)) < 0, "not at once: " + took);
        assertEquals(Status.Code.UNAVAILABLE, error.code());
        assertEquals(started.getRunId(), error.runId());
        assertEquals(last.getSequence(), error.afterSequence());
      }
    }
  }
}
