package dev.waystation.client;

/**
 * PERMISSION_DENIED / PERMISSION_DENIED: The credential may not do this action, or start a run
 * outside its tenants.
 */
public final class PermissionDeniedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  PermissionDeniedException(StatusDetails details) {
    super(details);
  }
}
