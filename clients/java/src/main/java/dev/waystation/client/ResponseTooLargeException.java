package dev.waystation.client;

/**
 * RESOURCE_EXHAUSTED / RESPONSE_TOO_LARGE: The answer is larger than a message limit: the
 * server's {@code --max-message-bytes}, or this client's receive limit ({@link
 * WaystationClient#withMaxReceiveMessageBytes}); {@link #limitOf()} says which. The server made
 * the answer, so a call that changes a run took effect: read the run with getRun, without
 * {@code include_state} (or listRuns, which carries no results), or raise the limit. {@link
 * #runId()} names the run when the server refused (the client cannot read a refused answer).
 */
public final class ResponseTooLargeException extends WaystationException {
  private static final long serialVersionUID = 1L;

  ResponseTooLargeException(StatusDetails details) {
    super(details);
  }

  /** The answer's size in bytes ({@code metadata().get("size")}), or -1 when it is missing. */
  public long size() {
    return metadataNumber("size");
  }

  /** The limit in bytes that the answer broke ({@code metadata().get("limit")}), or -1. */
  public long limit() {
    return metadataNumber("limit");
  }

  /** Whose limit the answer broke: "server", or "client" (this client's receive limit). */
  public String limitOf() {
    return metadata().getOrDefault("limit_of", "server");
  }
}
