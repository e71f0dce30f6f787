package dev.waystation.client;

/**
 * FAILED_PRECONDITION / WORKFLOW_CHANGED: A resume of a run that its workflow as deployed now
 * cannot continue (metadata {@code run_id}, {@code workflow_id}, {@code step_path}): the step it
 * waits in is gone, steps were added or moved before it, or its stored input fails the new
 * schemas. The run waits as it is: deploy the workflow as it was, time-travel it to a step, or
 * cancel it.
 */
public final class WorkflowChangedException extends WaystationException {
  private static final long serialVersionUID = 1L;

  WorkflowChangedException(StatusDetails details) {
    super(details);
  }
}
