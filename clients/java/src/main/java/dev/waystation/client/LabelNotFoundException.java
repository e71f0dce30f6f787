package dev.waystation.client;

/**
 * FAILED_PRECONDITION / LABEL_NOT_FOUND: A resume with an unknown label; {@link #resumeLabels()}
 * lists the known ones.
 */
public final class LabelNotFoundException extends WaystationException {
  private static final long serialVersionUID = 1L;

  LabelNotFoundException(StatusDetails details) {
    super(details);
  }
}
