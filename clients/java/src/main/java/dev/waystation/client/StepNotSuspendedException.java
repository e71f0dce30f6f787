package dev.waystation.client;

/**
 * FAILED_PRECONDITION / STEP_NOT_SUSPENDED: A resume of a step that is not suspended, or a path to
 * no such step; {@link #suspended()} lists the suspended ones.
 */
public final class StepNotSuspendedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  StepNotSuspendedException(StatusDetails details) {
    super(details);
  }
}
