package dev.waystation.client;

/** ABORTED / VERSION_MISMATCH: The run's version differs from {@code expected_version}. */
public final class VersionMismatchException extends WaystationException {
  private static final long serialVersionUID = 1L;

  VersionMismatchException(StatusDetails details) {
    super(details);
  }
}
