package dev.waystation.client;

/**
 * UNAVAILABLE / SERVER_DRAINING: The server is draining (a rollout) and ended this watch once it
 * had sent every stored event: watch again (another replica answers) with {@link
 * #afterSequence()} as {@code afterSequence}, and no event is missed or repeated.
 */
public final class ServerDrainingException extends WaystationException {
  private static final long serialVersionUID = 1L;

  ServerDrainingException(StatusDetails details) {
    super(details);
  }

  /**
   * The sequence to watch again after ({@code metadata().get("after_sequence")}), or -1 when it
   * is missing.
   */
  public long afterSequence() {
    return metadataNumber("after_sequence");
  }
}
