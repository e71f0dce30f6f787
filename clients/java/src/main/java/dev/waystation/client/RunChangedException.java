package dev.waystation.client;

/**
 * ABORTED / RUN_CHANGED: Another writer changed the run while this call was changing it; read
 * the run again, then retry.
 */
public final class RunChangedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  RunChangedException(StatusDetails details) {
    super(details);
  }
}
