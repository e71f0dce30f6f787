package dev.waystation.client;

/** NOT_FOUND / WORKFLOW_NOT_FOUND: No workflow with that id is registered. */
public final class WorkflowNotFoundException extends WaystationException {
  private static final long serialVersionUID = 1L;

  WorkflowNotFoundException(StatusDetails details) {
    super(details);
  }
}
