package dev.waystation.client;

/**
 * UNAUTHENTICATED / UNAUTHENTICATED: The call carried no credential, or one the server does not
 * know (a server started with {@code --auth-config}).
 */
public final class UnauthenticatedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  UnauthenticatedException(StatusDetails details) {
    super(details);
  }
}
