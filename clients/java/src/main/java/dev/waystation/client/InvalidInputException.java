package dev.waystation.client;

/**
 * INVALID_ARGUMENT / INVALID_INPUT: Workflow input or initial state that its schema rejects; see
 * {@link #fieldViolations()}.
 */
public final class InvalidInputException extends WaystationException {
  private static final long serialVersionUID = 1L;

  InvalidInputException(StatusDetails details) {
    super(details);
  }
}
