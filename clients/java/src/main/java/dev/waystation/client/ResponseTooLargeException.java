package dev.waystation.client;

/**
 * RESOURCE_EXHAUSTED / RESPONSE_TOO_LARGE: The answer is larger than the server's {@code
 * --max-message-bytes}. A call that changes a run took effect: read the run ({@link #runId()})
 * with getRun, without {@code include_state}, or raise the limit.
 */
public final class ResponseTooLargeException extends WaystationException {
  private static final long serialVersionUID = 1L;

  ResponseTooLargeException(StatusDetails details) {
    super(details);
  }

  /** The answer's size in bytes ({@code metadata().get("size")}), or -1 when it is missing. */
  public long size() {
    return number("size");
  }

  /** The server's message limit in bytes ({@code metadata().get("limit")}), or -1. */
  public long limit() {
    return number("limit");
  }

  private long number(String key) {
    try {
      return Long.parseLong(metadata().getOrDefault(key, "-1"));
    } catch (NumberFormatException e) {
      return -1;
    }
  }
}
