package dev.waystation.client;

import dev.waystation.v1.CancelRunRequest;
import dev.waystation.v1.CreateRunRequest;
import dev.waystation.v1.DeleteRunRequest;
import dev.waystation.v1.GetRunRequest;
import dev.waystation.v1.GetWorkflowRequest;
import dev.waystation.v1.ListRunsRequest;
import dev.waystation.v1.ListRunsResponse;
import dev.waystation.v1.ListWorkflowsRequest;
import dev.waystation.v1.ListWorkflowsResponse;
import dev.waystation.v1.RestartRunRequest;
import dev.waystation.v1.ResumeRequest;
import dev.waystation.v1.Run;
import dev.waystation.v1.StartRunRequest;
import dev.waystation.v1.StepPath;
import dev.waystation.v1.TimeTravelRunRequest;
import dev.waystation.v1.WatchRunRequest;
import dev.waystation.v1.Workflow;
import dev.waystation.v1.WorkflowResult;
import dev.waystation.v1.WorkflowServiceGrpc;
import dev.waystation.v1.WorkflowServiceGrpc.WorkflowServiceBlockingStub;
import io.grpc.Channel;
import io.grpc.ClientInterceptor;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * A blocking client of Waystation's {@code WorkflowService}.
 *
 * <pre>{@code
 * try (WaystationClient client = WaystationClient.connect("127.0.0.1:50051")) {
 *   WorkflowResult run = client.startRun("document-review", Map.of("document_id", "d-1", ...));
 *   StepPath waiting = run.getSuspended(0);              // [review, legal-review]
 *   client.resumeRun(run.getRunId(), Map.of("approved", true, "reviewer", "lee"), waiting);
 * }
 * }</pre>
 *
 * <p>Every failed call throws a {@link WaystationException} (a subclass per server reason).
 * The {@code with...} methods return a client that shares this one's channel; close the client
 * that {@link #connect} returned, which closes the channel ({@code close()} of a derived client
 * or of one made by {@link #create} does nothing). Instances are immutable and thread-safe.
 */
public final class WaystationClient implements AutoCloseable {
  private final WorkflowServiceBlockingStub stub;
  private final ManagedChannel ownedChannel;

  private WaystationClient(WorkflowServiceBlockingStub stub, ManagedChannel ownedChannel) {
    this.stub = stub;
    this.ownedChannel = ownedChannel;
  }

  /**
   * A client with its own plaintext channel to {@code target} ("host:port"). The channel takes
   * answers of any size, where grpc-java's default limit is 4 MiB: the server refuses an answer
   * over its own {@code --max-message-bytes} with {@link ResponseTooLargeException}, which says
   * more. {@link #withMaxReceiveMessageBytes} sets a limit.
   */
  public static WaystationClient connect(String target) {
    ManagedChannel channel =
        Grpc.newChannelBuilder(target, InsecureChannelCredentials.create())
            .maxInboundMessageSize(Integer.MAX_VALUE)
            .build();
    return new WaystationClient(WorkflowServiceGrpc.newBlockingStub(channel), channel);
  }

  /**
   * A client on a channel that the caller built (TLS, credentials, ...) and closes. The channel
   * keeps its own receive limit ({@code maxInboundMessageSize}, 4 MiB by default).
   */
  public static WaystationClient create(Channel channel) {
    return new WaystationClient(WorkflowServiceGrpc.newBlockingStub(channel), null);
  }

  /** The same client whose calls fail with DEADLINE_EXCEEDED once this time from now passes. */
  public WaystationClient withDeadlineAfter(long duration, TimeUnit unit) {
    return derive(stub.withDeadlineAfter(duration, unit));
  }

  /** The same client whose calls fail with DEADLINE_EXCEEDED once this time from now passes. */
  public WaystationClient withDeadlineAfter(Duration duration) {
    return withDeadlineAfter(duration.toNanos(), TimeUnit.NANOSECONDS);
  }

  /**
   * The same client, refusing answers larger than {@code bytes}: such an answer throws a {@link
   * ResponseTooLargeException} whose {@code limitOf()} is "client". The call took effect all the
   * same (the server made the answer).
   */
  public WaystationClient withMaxReceiveMessageBytes(int bytes) {
    return derive(stub.withMaxInboundMessageSize(bytes));
  }

  /** The same client, sending this W3C {@code traceparent} with every call. */
  public WaystationClient withTraceparent(String traceparent) {
    return withInterceptors(TraceContextInterceptor.traceparent(traceparent));
  }

  /** The same client, sending these headers with every call (e.g. {@code authorization}). */
  public WaystationClient withMetadata(Metadata headers) {
    return withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
  }

  /** The same client, its calls going through these interceptors. */
  public WaystationClient withInterceptors(ClientInterceptor... interceptors) {
    return derive(stub.withInterceptors(interceptors));
  }

  /** The generated stub with this client's options, for anything this class does not cover. */
  public WorkflowServiceBlockingStub stub() {
    return stub;
  }

  /** Every registered workflow definition, reading all pages. */
  public List<Workflow> listWorkflows() {
    List<Workflow> workflows = new ArrayList<>();
    String token = "";
    do {
      ListWorkflowsResponse page =
          listWorkflows(ListWorkflowsRequest.newBuilder().setPageToken(token).build());
      workflows.addAll(page.getWorkflowsList());
      token = page.getNextPageToken();
    } while (!token.isEmpty());
    return workflows;
  }

  /** One page of workflow definitions. */
  public ListWorkflowsResponse listWorkflows(ListWorkflowsRequest request) {
    return call(() -> stub.listWorkflows(request));
  }

  /** A workflow definition with its step graph and JSON Schemas. */
  public Workflow getWorkflow(String workflowId) {
    GetWorkflowRequest request = GetWorkflowRequest.newBuilder().setWorkflowId(workflowId).build();
    return call(() -> stub.getWorkflow(request));
  }

  /** A PENDING run of the workflow; {@link #startRun(StartRunRequest)} with its id starts it. */
  public Run createRun(String workflowId) {
    return createRun(CreateRunRequest.newBuilder().setWorkflowId(workflowId).build());
  }

  /** A PENDING run, with the options of the request. */
  public Run createRun(CreateRunRequest request) {
    return call(() -> stub.createRun(request));
  }

  /**
   * Starts a new run and waits until it settles (SUCCESS, FAILED, SUSPENDED, ...).
   *
   * @param input JSON-like data for {@link Values#of}: a Map, List, String, number, ...
   */
  public WorkflowResult startRun(String workflowId, Object input) {
    return startRun(
        StartRunRequest.newBuilder()
            .setWorkflowId(workflowId)
            .setInputData(Values.of(input))
            .build());
  }

  /** Starts a run with the options of the request. */
  public WorkflowResult startRun(StartRunRequest request) {
    return call(() -> stub.startRun(request));
  }

  /** Resumes the one suspended step of the run and waits until the run settles again. */
  public WorkflowResult resumeRun(String runId, Object resumeData) {
    return resumeRun(resumeRequest(runId, resumeData).build());
  }

  /** Resumes the suspended step at {@code step} and waits until the run settles again. */
  public WorkflowResult resumeRun(String runId, Object resumeData, StepPath step) {
    return resumeRun(resumeRequest(runId, resumeData).setStep(step).build());
  }

  /** Resumes the step at a text path such as {@code "review.legal-review"} (split on "."). */
  public WorkflowResult resumeRun(String runId, Object resumeData, String step) {
    return resumeRun(runId, resumeData, StepPaths.of(step));
  }

  /** Resumes with the options of the request (label, foreach index, request_id, ...). */
  public WorkflowResult resumeRun(ResumeRequest request) {
    return call(() -> stub.resumeRun(request));
  }

  /** Cancels the run; a no-op on a finished run. */
  public Run cancelRun(String runId, String reason) {
    return cancelRun(CancelRunRequest.newBuilder().setRunId(runId).setReason(reason).build());
  }

  /** Cancels the run with the options of the request. */
  public Run cancelRun(CancelRunRequest request) {
    return call(() -> stub.cancelRun(request));
  }

  /** The run with its latest result. */
  public Run getRun(String runId) {
    return getRun(GetRunRequest.newBuilder().setRunId(runId).build());
  }

  /** The run with its latest result, with the output options of the request. */
  public Run getRun(GetRunRequest request) {
    return call(() -> stub.getRun(request));
  }

  /** One page of runs, newest first, filtered as the request says. */
  public ListRunsResponse listRuns(ListRunsRequest request) {
    return call(() -> stub.listRuns(request));
  }

  /**
   * The run's events after {@code afterSequence} (0: all), blocking on {@code hasNext()} until
   * the next one comes; the stream ends when the run settles in a final state (SUCCESS, FAILED,
   * CANCELED), which a SUSPENDED run may not do for days. Close the watch to stop early (in
   * try-with-resources): that cancels the call. A deadline on the client bounds the wait. A
   * reconnect with the last sequence seen as {@code afterSequence} misses nothing.
   *
   * @return an {@link java.util.Iterator Iterator&lt;RunEvent&gt;} that is also {@link
   *     AutoCloseable}
   */
  public RunWatch watchRun(String runId, long afterSequence) {
    WatchRunRequest request =
        WatchRunRequest.newBuilder().setRunId(runId).setAfterSequence(afterSequence).build();
    return new RunWatch(stub, request);
  }

  /** Continues a run whose process died while it was RUNNING or WAITING. */
  public WorkflowResult restartRun(String runId) {
    return restartRun(RestartRunRequest.newBuilder().setRunId(runId).build());
  }

  /** Continues a run with the options of the request. */
  public WorkflowResult restartRun(RestartRunRequest request) {
    return call(() -> stub.restartRun(request));
  }

  /** Re-executes a run from a step with new input, keeping the results before it. */
  public WorkflowResult timeTravelRun(TimeTravelRunRequest request) {
    return call(() -> stub.timeTravelRun(request));
  }

  /** Deletes a run and its history. */
  public void deleteRun(String runId) {
    call(() -> stub.deleteRun(DeleteRunRequest.newBuilder().setRunId(runId).build()));
  }

  /** Closes the channel that {@link #connect} opened, waiting briefly for calls to finish. */
  @Override
  public void close() {
    if (ownedChannel == null) {
      return;
    }
    ownedChannel.shutdown();
    try {
      if (!ownedChannel.awaitTermination(5, TimeUnit.SECONDS)) {
        ownedChannel.shutdownNow();
      }
    } catch (InterruptedException e) {
      ownedChannel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  private WaystationClient derive(WorkflowServiceBlockingStub derived) {
    return new WaystationClient(derived, null);
  }

  private static ResumeRequest.Builder resumeRequest(String runId, Object resumeData) {
    return ResumeRequest.newBuilder().setRunId(runId).setResumeData(Values.of(resumeData));
  }

  private static <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw WaystationException.from(e);
    }
  }
}
