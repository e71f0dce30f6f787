package dev.waystation.client;

/** NOT_FOUND / RUN_NOT_FOUND: The run does not exist. */
public final class RunNotFoundException extends WaystationException {
  private static final long serialVersionUID = 1L;

  RunNotFoundException(StatusDetails details) {
    super(details);
  }
}
