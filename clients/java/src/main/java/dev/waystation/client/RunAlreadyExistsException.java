package dev.waystation.client;

/** ALREADY_EXISTS / RUN_ALREADY_EXISTS: A run with the caller-chosen id exists already. */
public final class RunAlreadyExistsException extends WaystationException {
  private static final long serialVersionUID = 1L;

  RunAlreadyExistsException(StatusDetails details) {
    super(details);
  }
}
