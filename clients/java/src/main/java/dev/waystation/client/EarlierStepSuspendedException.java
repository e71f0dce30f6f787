package dev.waystation.client;

/**
 * FAILED_PRECONDITION / EARLIER_STEP_SUSPENDED: A time travel to a step after a suspended one
 * (metadata {@code suspended_step_path}); resume that step, or time-travel to it.
 */
public final class EarlierStepSuspendedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  EarlierStepSuspendedException(StatusDetails details) {
    super(details);
  }
}
