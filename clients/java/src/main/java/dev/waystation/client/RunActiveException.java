package dev.waystation.client;

/** FAILED_PRECONDITION / RUN_ACTIVE: A delete or time travel of a run that is running. */
public final class RunActiveException extends WaystationException {
  private static final long serialVersionUID = 1L;

  RunActiveException(StatusDetails details) {
    super(details);
  }
}
