package dev.waystation.client;

/**
 * INVALID_ARGUMENT / INVALID_ARGUMENT: A malformed request (a bad id, page token, ...); see {@link
 * #fieldViolations()}.
 */
public final class InvalidArgumentException extends WaystationException {
  private static final long serialVersionUID = 1L;

  InvalidArgumentException(StatusDetails details) {
    super(details);
  }
}
