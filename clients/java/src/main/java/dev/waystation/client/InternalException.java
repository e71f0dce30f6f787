package dev.waystation.client;

/** INTERNAL / INTERNAL: An unexpected server error; the server's log has the details. */
public final class InternalException extends WaystationException {
  private static final long serialVersionUID = 1L;

  InternalException(StatusDetails details) {
    super(details);
  }
}
