"""A workflows module whose RetryConfig the engine refuses while it is imported (for the
serve start-up test): the error must point at the line below, not at dataclass code."""

from waystation import RetryConfig, create_workflow

late = create_workflow(id="late", retry_config=RetryConfig(attempts=1, delay=-1))
