package dev.waystation.client;

import static org.junit.jupiter.api.Assertions.fail;

import io.grpc.Status;
import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A real Waystation server of the test's own, for the options that the shared one at {@code
 * WAYSTATION_ADDRESS} does not have ({@code --auth-config}, {@code --max-message-bytes}), or to
 * {@link #drain()} under a watch. It is started as {@code scripts/with_server.sh} starts that one:
 * the Python in {@code $PYTHON}, else the repository's {@code .venv}, with the repository on
 * {@code PYTHONPATH}, serving {@code tests.support.workflows} from a fresh SQLite file in {@code
 * dir}.
 */
final class TestServer implements AutoCloseable {
  private final Process process;
  private final Path log;
  final String address;

  /** A client of this server (no deadline, no credentials), closed with it. */
  final WaystationClient client;

  private TestServer(Process process, Path log, String address) {
    this.process = process;
    this.log = log;
    this.address = address;
    this.client = WaystationClient.connect(address);
  }

  /** Starts the server with {@code options} and returns once it answers calls. */
  static TestServer start(Path dir, String... options) throws IOException, InterruptedException {
    // Maven runs the tests in clients/java.
    Path repo = Path.of(System.getProperty("user.dir")).resolve("../..").normalize();
    String python = System.getenv("PYTHON");
    if (python == null || python.isBlank()) {
      python = repo.resolve(".venv/bin/python").toString();
    }
    String address = "127.0.0.1:" + freePort();
    List<String> command = new ArrayList<>(List.of(python, "-m", "waystation.cli", "serve"));
    command.addAll(List.of("--listen", address, "--db", "sqlite:///" + dir.resolve("ws.db")));
    command.addAll(List.of("--workflows", "tests.support.workflows"));
    command.addAll(List.of(options));
    Path log = dir.resolve("server.log");
    ProcessBuilder builder =
        new ProcessBuilder(command)
            .directory(repo.toFile())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile());
    String path = System.getenv("PYTHONPATH");
    builder.environment().put("PYTHONPATH", repo + (path == null ? "" : ":" + path));
    TestServer server = new TestServer(builder.start(), log, address);
    server.awaitServing();
    return server;
  }

  /** Until a call gets an answer other than UNAVAILABLE (any answer: the server is up). */
  private void awaitServing() throws IOException, InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    try (WaystationClient client = WaystationClient.connect(address)) {
      while (true) {
        if (!process.isAlive()) {
          fail("the server exited " + process.exitValue() + ":\n" + Files.readString(log));
        }
        try {
          client.withDeadlineAfter(1, TimeUnit.SECONDS).listWorkflows();
          return;
        } catch (WaystationException e) {
          boolean down =
              e.code() == Status.Code.UNAVAILABLE || e.code() == Status.Code.DEADLINE_EXCEEDED;
          if (!down) {
            return;
          }
        }
        if (System.nanoTime() > deadline) {
          fail("the server did not answer within 20 s:\n" + Files.readString(log));
        }
        Thread.sleep(100);
      }
    }
  }

  private static int freePort() throws IOException {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    }
  }

  /**
   * Sends SIGTERM, as a rollout stops a replica, and returns at once: the server drains while its
   * calls end; {@link #close()} waits for it to exit.
   */
  void drain() {
    process.destroy();
  }

  /**
   * Closes the client, then stops the server with SIGTERM, as with_server.sh does (SIGKILL if it
   * hangs).
   */
  @Override
  public void close() throws InterruptedException {
    client.close();
    process.destroy();
    if (!process.waitFor(15, TimeUnit.SECONDS)) {
      process.destroyForcibly().waitFor();
    }
  }
}
