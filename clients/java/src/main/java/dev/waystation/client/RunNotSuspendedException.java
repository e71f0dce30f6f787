package dev.waystation.client;

/** FAILED_PRECONDITION / RUN_NOT_SUSPENDED: A resume of a run that is not suspended. */
public final class RunNotSuspendedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  RunNotSuspendedException(StatusDetails details) {
    super(details);
  }
}
