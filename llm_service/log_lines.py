"""The log lines the runbook greps for, word for word (docs/reference.md, "Log lines").

They are %-style templates so that callers log them lazily: ``log.info(TASK_COMPLETED, task_id, n)``.
tests/foundation/test_logging.py checks each template renders to that wording. Change none of them
without changing docs/reference.md, docs/RUNBOOK.ru.md and that test.
"""

WORKER_STARTED = "Worker started, listening to Kafka topic '%s'..."
PROCESSING_TASK = "Processing task %s with worker %s"
TASK_COMPLETED = "Task %s completed: %d tokens"
TASK_PROCESSED_IN = "Task %s processed in %.1fms"
TASK_HELD = "Task %s held: %s"
STATUS_SENT = "Status %d sent for task %s"
BREAKER_OPEN = "Circuit breaker OPEN after %d failures"
TASK_FAILED = "Failed to process task %s: %s"
INIT_FAILED = "Failed to initialize interface: %s"
BOOTSTRAP_FAILED = "Bootstrap failed: %s"
