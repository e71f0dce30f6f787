package dev.waystation.client;

/**
 * ABORTED / RESUME_CONFLICT: Another resume claimed the same suspension first; retrying with the
 * same request_id is safe.
 */
public final class ResumeConflictException extends WaystationException {
  private static final long serialVersionUID = 1L;

  ResumeConflictException(StatusDetails details) {
    super(details);
  }
}
