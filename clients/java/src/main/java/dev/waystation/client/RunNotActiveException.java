package dev.waystation.client;

/** FAILED_PRECONDITION / RUN_NOT_ACTIVE: A restart of a run that is not running. */
public final class RunNotActiveException extends WaystationException {
  private static final long serialVersionUID = 1L;

  RunNotActiveException(StatusDetails details) {
    super(details);
  }
}
