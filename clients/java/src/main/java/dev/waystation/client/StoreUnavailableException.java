package dev.waystation.client;

/**
 * UNAVAILABLE / STORE_UNAVAILABLE: The server's database failed. The call may have taken effect
 * in part (metadata run_id names the run it was writing): retry with the same request_id.
 */
public final class StoreUnavailableException extends WaystationException {
  private static final long serialVersionUID = 1L;

  StoreUnavailableException(StatusDetails details) {
    super(details);
  }
}
