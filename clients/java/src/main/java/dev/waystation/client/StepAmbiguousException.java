package dev.waystation.client;

/**
 * FAILED_PRECONDITION / STEP_AMBIGUOUS: A resume without a step while several are suspended;
 * {@link #suspended()} lists them.
 */
public final class StepAmbiguousException extends WaystationException {
  private static final long serialVersionUID = 1L;

  StepAmbiguousException(StatusDetails details) {
    super(details);
  }
}
