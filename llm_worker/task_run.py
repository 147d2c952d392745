"""What one task run knows so far, and the S3 retry every step of it shares.

Owned by the run's task thread; llm_worker/pipeline.py drives the run, llm_worker/final_status.py
decides whether it has run before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llm_service.errors import TransientTaskError
from llm_service.status_table import Stage
from llm_worker.decoding import DocumentInput, TextInput
from llm_worker.gigachat.budget import CallBudget
from llm_worker.ports import Progress
from llm_worker.retry_policy import RetryPolicy
from llm_worker.task_context import Record, TaskContext
from llm_worker.task_message import TaskSpec

T = TypeVar("T")


@dataclass(kw_only=True)
class TaskRun:
    """One run of one message's task."""

    record: Record
    spec: TaskSpec
    ctx: TaskContext
    entry: int
    started: float
    deadline: float
    # No process anywhere started this message before (llm_worker/offsets.py, "first delivery").
    first_delivery: bool = False
    attempt: int = 0
    announced: int = 0  # the last attempt a PROCESSING status was sent for
    content: TextInput | DocumentInput | None = None
    file_id: str | None = None
    budget: CallBudget = field(default_factory=lambda: CallBudget(limit=1))

    @property
    def source(self) -> dict[str, Any]:
        return {"topic": self.record.topic, "partition": self.record.partition, "offset": self.record.offset}


@dataclass(frozen=True, kw_only=True)
class StorageRetry:
    """Retries an S3 operation of a run on transient errors, pausing by the task retry policy."""

    retry: RetryPolicy
    progress: Progress
    clock: Callable[[], float]

    def __call__(self, operation: Callable[[], T], run: TaskRun, until: float) -> T:
        """``operation()``, tried again after a transient error until ``until`` (monotonic)."""
        failures = 0
        while True:
            try:
                return operation()
            except TransientTaskError:
                failures += 1
                pause = self.retry.delay(min(failures, self.retry.max_attempts))
                if self.clock() + pause >= until:
                    raise
                self.progress.task_stage(run.entry, Stage.RETRY_WAIT)
                run.ctx.sleep(pause)
