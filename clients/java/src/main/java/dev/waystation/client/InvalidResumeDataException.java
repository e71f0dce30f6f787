package dev.waystation.client;

/**
 * INVALID_ARGUMENT / INVALID_RESUME_DATA: Resume data that the step's resume schema rejects; the
 * run stays suspended. {@link #fieldViolations()} has one entry per problem, e.g. {@code
 * resume_data.approved}.
 */
public final class InvalidResumeDataException extends WaystationException {
  private static final long serialVersionUID = 1L;

  InvalidResumeDataException(StatusDetails details) {
    super(details);
  }
}
