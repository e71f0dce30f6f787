package dev.waystation.client;

/**
 * FAILED_PRECONDITION / FOREACH_INDEX_NOT_SUSPENDED: A resume of a foreach item that is not
 * suspended.
 */
public final class ForeachIndexNotSuspendedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  ForeachIndexNotSuspendedException(StatusDetails details) {
    super(details);
  }
}
