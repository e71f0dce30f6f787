package dev.waystation.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.waystation.v1.ListRunsRequest;
import dev.waystation.v1.Run;
import dev.waystation.v1.RunStatus;
import io.grpc.Metadata;
import io.grpc.Status;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The refusals that only a server started with {@code --auth-config} and a small {@code
 * --max-message-bytes} gives: UNAUTHENTICATED, PERMISSION_DENIED and RESPONSE_TOO_LARGE, each
 * as its subclass. The server is a real one of this class's own ({@link TestServer}).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class AuthAndLimitsTest {
  private static final int LIMIT = 64 * 1024;
  private static final String RUNNER = token();
  private static final String READER = token();

  @TempDir static Path dir;
  private static TestServer server;
  private static WaystationClient anonymous;

  @BeforeAll
  static void start() throws IOException, InterruptedException {
    Path policy = dir.resolve("policy.json");
    Files.writeString(
        policy,
        """
        {"credentials": [
          {"name": "runner", "token_sha256": "%s", "actions": ["start", "read"]},
          {"name": "reader", "token_sha256": "%s", "actions": ["read"]}]}
        """
            .formatted(sha256(RUNNER), sha256(READER)));
    server =
        TestServer.start(
            dir, "--auth-config", policy.toString(), "--max-message-bytes", String.valueOf(LIMIT));
    anonymous = server.client;
  }

  @AfterAll
  static void stop() throws InterruptedException {
    if (server != null) {
      server.close();
    }
  }

  private static WaystationClient as(String token) {
    Metadata headers = new Metadata();
    headers.put(
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
    return anonymous.withMetadata(headers).withDeadlineAfter(30, TimeUnit.SECONDS);
  }

  @Test
  void aCallWithoutAKnownCredentialIsUnauthenticated() {
    UnauthenticatedException none =
        assertThrows(UnauthenticatedException.class, () -> anonymous.listWorkflows());
    assertEquals(Status.Code.UNAUTHENTICATED, none.code());
    assertEquals("UNAUTHENTICATED", none.reason());

    assertThrows(UnauthenticatedException.class, () -> as(token()).listWorkflows());
  }

  @Test
  void anActionTheCredentialMayNotDoIsPermissionDenied() {
    assertFalse(as(READER).listWorkflows().isEmpty());

    PermissionDeniedException denied =
        assertThrows(
            PermissionDeniedException.class,
            () -> as(READER).startRun("inflate", Map.of("bytes", 10)));
    assertEquals(Status.Code.PERMISSION_DENIED, denied.code());
    assertEquals("PERMISSION_DENIED", denied.reason());
  }

  @Test
  void anAnswerOverTheMessageLimitIsResponseTooLargeAndTheRunTookEffect() {
    ResponseTooLargeException tooLarge =
        assertThrows(
            ResponseTooLargeException.class,
            () -> as(RUNNER).startRun("inflate", Map.of("bytes", 2 * LIMIT)));
    assertEquals(Status.Code.RESOURCE_EXHAUSTED, tooLarge.code());
    assertEquals("RESPONSE_TOO_LARGE", tooLarge.reason());
    assertEquals(LIMIT, tooLarge.limit());
    assertTrue(tooLarge.size() > 2 * LIMIT, "size " + tooLarge.size());

    // A listing carries no result: the run is there, finished.
    ListRunsRequest inflated = ListRunsRequest.newBuilder().setWorkflowId("inflate").build();
    Run run =
        as(RUNNER).listRuns(inflated).getRunsList().stream()
            .filter(r -> r.getRunId().equals(tooLarge.runId()))
            .findFirst()
            .orElseThrow();
    assertEquals(RunStatus.RUN_STATUS_SUCCESS, run.getStatus());
  }

  private static String token() {
    return HexFormat.of().formatHex(new SecureRandom().generateSeed(16));
  }

  private static String sha256(String text) {
    try {
      MessageDigest digest = MessageDigest.getInstance("SHA-256");
      return HexFormat.of().formatHex(digest.digest(text.getBytes(StandardCharsets.UTF_8)));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
