package dev.waystation.client;

import dev.waystation.v1.RunEvent;
import dev.waystation.v1.WatchRunRequest;
import dev.waystation.v1.WorkflowServiceGrpc.WorkflowServiceBlockingStub;
import io.grpc.Context;
import io.grpc.StatusRuntimeException;
import java.util.Iterator;
import java.util.NoSuchElementException;

/**
 * The events of a watched run, from {@link WaystationClient#watchRun}: an iterator whose {@link
 * #hasNext()} blocks until the next event comes, and which {@link #close()} stops.
 *
 * <p>The server ends the stream only when the run settles in a final state (SUCCESS, FAILED,
 * CANCELED); a SUSPENDED run can wait for days. A watch that you stop reading before that keeps
 * its call open on the channel (and {@link WaystationClient#close()} waits for it), so close it:
 *
 * <pre>{@code
 * try (RunWatch events = client.watchRun(runId, 0)) {
 *   while (events.hasNext()) {
 *     RunEvent event = events.next();
 *     if (event.getType() == RunEventType.RUN_EVENT_TYPE_RUN_SETTLED) {
 *       break; // close() cancels the call: the server stops streaming
 *     }
 *   }
 * }
 * }</pre>
 *
 * <p>{@code close()} cancels the call and may come from another thread: a {@code hasNext()}
 * blocked in it then returns false, as every later one does. Closing a finished watch does
 * nothing. A failed stream throws a {@link WaystationException} from {@code hasNext()} or {@code
 * next()}; a server that drains (a rollout) ends the watch with a {@link
 * ServerDrainingException}, whose {@link ServerDrainingException#afterSequence()} is the one to
 * watch again with.
 */
public final class RunWatch implements Iterator<RunEvent>, AutoCloseable {
  // The call belongs to this context: cancelling it cancels the call (grpc-java's blocking
  // iterator has no cancel of its own).
  private final Context.CancellableContext context = Context.current().withCancellation();
  private final Iterator<RunEvent> events;
  private volatile boolean closed;

  RunWatch(WorkflowServiceBlockingStub stub, WatchRunRequest request) {
    Context previous = context.attach();
    try {
      events = stub.watchRun(request);
    } catch (StatusRuntimeException e) {
      context.cancel(null);
      throw WaystationException.from(e);
    } finally {
      context.detach(previous);
    }
  }

  /** Whether another event comes, blocking until it does; false once closed or ended. */
  @Override
  public boolean hasNext() {
    if (closed) {
      return false;
    }
    try {
      boolean more = events.hasNext();
      if (!more) {
        context.cancel(null); // ended: only releases the context
      }
      return more;
    } catch (StatusRuntimeException e) {
      if (closed) {
        return false; // close() cancelled the call
      }
      context.cancel(null);
      throw WaystationException.from(e);
    }
  }

  /** The next event, blocking until it comes. */
  @Override
  public RunEvent next() {
    if (!hasNext()) {
      throw new NoSuchElementException("the watch ended or was closed");
    }
    return events.next(); // hasNext() holds it already: this does not block
  }

  /** Stops the watch: cancels its call, so the server stops streaming. Idempotent. */
  @Override
  public void close() {
    closed = true;
    context.cancel(null);
  }
}
