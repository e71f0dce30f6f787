package dev.waystation.client;

/**
 * UNAVAILABLE / STORE_UNAVAILABLE: The server's database failed and nothing was written; retry
 * with the same request_id.
 */
public final class StoreUnavailableException extends WaystationException {
  private static final long serialVersionUID = 1L;

  StoreUnavailableException(StatusDetails details) {
    super(details);
  }
}
