"""Has this task run before? The final-status marker, and the checks a delivery makes before it runs.

Exactly one final status per task, across crashes: a worker killed after its final status was
acknowledged but before the offset was committed leaves a redelivery behind. Once a final status is
acknowledged, a small marker object is written (``ObjectRef.final_marker``) naming the message(s)
that got it and the outcome. Before a task runs, two checks (docs/worker.md, "Duplicates, re-sent
tasks, revoked calls"):

* **the marker** (every delivery): one of its messages delivered again ends silently; a new message
  for the task gets the stored outcome republished, FAILED included, without a model call;
* **an existing result object** (a possible redelivery only): an earlier delivery wrote it and died
  before its final status, so COMPLETED is published from it, without a model call.

The result check is skipped for a *first delivery* whose task cannot have left a result behind
anywhere: its offset was never started by any process (llm_worker/offsets.py, the fence), the
possible redeliveries of its partition have all ended, the Kafka key is the task_id (so every other
message of the task is on this partition, behind it), and no marker write of this task failed in
this process. Then a result without a marker could only come from an earlier message of the task on
this partition, and those have all ended, each writing its marker (or failing it, remembered here).
The marker check stays for every delivery: a client may send a finished task again at any time as a
new message, which no offset bookkeeping can tell from a first one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llm_service.errors import PermanentTaskError, TaskError
from llm_service.logs import iso_timestamp
from llm_service.status_table import Stage
from llm_service.task_status import TaskStatus
from llm_worker.ports import ObjectStore, Progress
from llm_worker.status_delivery import StatusDelivery
from llm_worker.task_run import StorageRetry, TaskRun

log = logging.getLogger(__name__)

MARKER_WRITE_S = 10.0  # how long a marker write is retried; a failure only risks a repeated status
UNMARKED_KEPT = 4096  # task ids whose marker write failed in this process (oldest forgotten first)


class FinalStatus:
    """The marker and the redelivery checks of one worker; shared by its task threads."""

    def __init__(
        self,
        *,
        storage: ObjectStore,
        delivery: StatusDelivery,
        progress: Progress,
        s3_retry: StorageRetry,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._storage = storage
        self._delivery = delivery
        self._progress = progress
        self._s3_retry = s3_retry
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._unmarked: OrderedDict[str, None] = OrderedDict()

    def already_final(self, run: TaskRun) -> bool:
        """The task's final status is already out: a redelivery sends nothing, a new message gets it again.

        A different message for the same task_id (a client sending it again, a duplicate) gets the
        stored outcome republished, without a model call. A marker written before sources were
        noted counts as the same message.
        """
        marker: dict[str, Any] | None = self._s3_retry(
            lambda: self._storage.read_json(run.spec.output.final_marker()), run, run.deadline
        )
        if marker is None or marker.get("task_id") != run.spec.task_id:
            return False
        sources = marker.get("sources")
        outcome = marker.get("outcome")
        if not isinstance(sources, list) or run.source in sources or not isinstance(outcome, dict):
            log.info(
                "Task %s already ended with status %s; not sending it again",
                run.spec.task_id,
                marker.get("status"),
            )
            self._progress.task_dropped(run.entry)
            return True
        return self._republish(run, marker, outcome, sources)

    def result_may_exist(self, run: TaskRun) -> bool:
        """Whether a result object of this task may exist without its marker (see the module doc)."""
        if not run.first_delivery or run.record.key != run.spec.task_id.encode():
            return True
        with self._lock:
            return run.spec.task_id in self._unmarked

    def reemit_existing(self, run: TaskRun) -> bool:
        """A result object written by an earlier delivery: publish COMPLETED again from it, no model call."""
        body: dict[str, Any] | None = self._s3_retry(
            lambda: self._storage.read_json(run.spec.output), run, run.deadline
        )
        if body is None or body.get("task_id") != run.spec.task_id:
            return False
        usage = body.get("usage")
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
        ms = body.get("processing_ms")
        log.info(
            "Task %s already has its result at %s; sending COMPLETED without calling the model",
            run.spec.task_id,
            run.spec.output.key,
        )
        self._progress.task_stage(run.entry, Stage.PUBLISHING)
        event = self._delivery.for_run(
            run,
            TaskStatus.COMPLETED,
            tokens_used=tokens if isinstance(tokens, int) else 0,
            processing_ms=float(ms) if isinstance(ms, (int, float)) else None,
            result=run.spec.output.as_dict(),
        )
        event["model"] = body.get("model")
        self._delivery.final(event, run.ctx)
        self.mark(
            run,
            TaskStatus.COMPLETED,
            tokens_used=event["tokens_used"],
            processing_ms=event["processing_ms"],
            result=run.spec.output.as_dict(),
        )
        self._progress.task_finished(run.entry, ok=True, tokens=0, processing_ms=0.0)
        return True

    def mark(self, run: TaskRun, status: TaskStatus, **outcome: Any) -> None:
        """Note that the final status is acknowledged, with what it said and which message got it."""
        marker = {
            "task_id": run.spec.task_id,
            "status": int(status),
            "ts": iso_timestamp(self._wall_clock()),
            "sources": [run.source],
            "outcome": {"attempt": max(run.attempt, 1), **outcome},
        }
        self._write(run, marker)

    def _republish(
        self, run: TaskRun, marker: dict[str, Any], outcome: dict[str, Any], sources: list[Any]
    ) -> bool:
        """A new message for a finished task: publish the stored final status again (no model call).

        FAILED too is republished, not run again: a task_id names one request whose final status
        does not change (consumers may keep the first one they see); a retry is a new task_id.
        """
        try:
            status = TaskStatus(int(marker["status"]))
        except (KeyError, TypeError, ValueError):
            return False
        log.info(
            "Task %s already ended with status %s; sending that status again for a new message, "
            "without calling the model",
            run.spec.task_id,
            status.name,
        )
        self._progress.task_stage(run.entry, Stage.PUBLISHING)
        attempt = outcome.get("attempt")
        run.attempt = attempt if isinstance(attempt, int) else 1
        error = outcome.get("error")
        event = self._delivery.for_run(
            run,
            status,
            tokens_used=outcome.get("tokens_used"),
            processing_ms=outcome.get("processing_ms"),
            result=outcome.get("result"),
            error=PermanentTaskError(str(error.get("message")), code=str(error.get("code")))
            if isinstance(error, dict)
            else None,
        )
        self._delivery.final(event, run.ctx)
        self._write(run, {**marker, "sources": [*sources[-15:], run.source]})
        self._progress.task_dropped(run.entry)
        return True

    def _write(self, run: TaskRun, marker: dict[str, Any]) -> None:
        """A failure here risks a repeated final status; the task is remembered as unmarked meanwhile."""
        ref = run.spec.output.final_marker()
        try:
            self._s3_retry(lambda: self._storage.write_json(ref, marker), run, self._clock() + MARKER_WRITE_S)
        except TaskError as exc:
            log.warning("Could not note the final status of task %s: %s", run.spec.task_id, exc)
            with self._lock:
                self._unmarked[run.spec.task_id] = None
                while len(self._unmarked) > UNMARKED_KEPT:
                    self._unmarked.popitem(last=False)
