"""One task from message to final status: validate → (final status already sent? stop) → RECEIVED →
(a possible redelivery: result exists? re-emit COMPLETED) → read input → PROCESSING → chat → write
result → COMPLETED; or FAILED plus a dead letter.

Runs in a task thread, one call of :meth:`TaskPipeline.run` per Kafka message. It never commits:
it returns an :class:`Outcome` once the final status (and dead letter) is acknowledged by Kafka,
and the consumer thread commits. Dependencies come in as small protocols, so the decisions here
are unit-tested with fakes (tests/worker/test_pipeline.py). Its neighbours: llm_worker/ports.py (the
protocols), final_status.py (has the task run before? the final-status marker), task_run.py (one
run's state), task_hold.py (held for budget or payment), task_context.py (record, context,
outcome), status_delivery.py (statuses and dead letters to Kafka), task_result.py (chat messages,
result object), retry_policy.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from llm_service import log_lines
from llm_service.errors import (
    BreakerOpenError,
    PaymentRequiredError,
    PermanentTaskError,
    ProbeFailedError,
    ShutdownRequested,
    TaskError,
    TransientTaskError,
)
from llm_service.logs import iso_timestamp
from llm_service.status_table import Stage
from llm_service.task_status import TaskStatus
from llm_worker import error_codes as codes
from llm_worker.decoding import DocumentInput, classify
from llm_worker.final_status import FinalStatus
from llm_worker.gigachat.budget import CallBudget
from llm_worker.gigachat.models import ChatResult
from llm_worker.ports import Gate, Leases, Model, ObjectStore, Progress, Publisher
from llm_worker.retry_policy import RetryPolicy
from llm_worker.status_delivery import StatusDelivery
from llm_worker.task_context import Outcome, Record, TaskContext
from llm_worker.task_hold import TaskHolds
from llm_worker.task_message import (
    FALLBACK_PARAM,
    Rejected,
    TaskRules,
    TaskSpec,
    parse_task,
    readable_task_id,
)
from llm_worker.task_result import build_messages, result_object
from llm_worker.task_run import StorageRetry, TaskRun

log = logging.getLogger(__name__)

BREAKER_POLL_S = 1.0  # how often a task parked on an open breaker tries again (the probe comes from here)
MIN_WRITE_WINDOW_S = 30.0  # a paid-for answer gets this long to reach S3 even past the task deadline


class TaskPipeline:
    """Runs tasks; one instance per worker process, shared by all task threads (holds no task state)."""

    def __init__(
        self,
        *,
        rules: TaskRules,
        storage: ObjectStore,
        model: Model,
        publisher: Publisher,
        progress: Progress,
        retry: RetryPolicy,
        task_timeout_s: float,
        leases: Leases,
        max_model_calls: int,
        breaker_open: Callable[[str], bool] = lambda model: False,
        breaker_poll_s: float = BREAKER_POLL_S,
        gate: Gate | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = rules
        self._storage = storage
        self._model = model
        self._delivery = StatusDelivery(publisher=publisher, wall_clock=wall_clock)
        self._progress = progress
        self._retry = retry
        self._task_timeout_s = task_timeout_s
        self._leases = leases
        self._max_model_calls = max_model_calls
        self._breaker_open = breaker_open
        self._breaker_poll_s = breaker_poll_s
        self._holds = TaskHolds(gate=gate, progress=progress, poll_s=breaker_poll_s, clock=clock)
        self._clock = clock
        self._wall_clock = wall_clock
        self._s3_retry = StorageRetry(retry=retry, progress=progress, clock=clock)
        self._final = FinalStatus(
            storage=storage,
            delivery=self._delivery,
            progress=progress,
            s3_retry=self._s3_retry,
            clock=clock,
            wall_clock=wall_clock,
        )

    def run(self, record: Record, ctx: TaskContext, *, first_delivery: bool = False) -> Outcome:
        """Task-thread entry, the door of a raw Kafka record: process it to its final status.

        Whatever the message holds, it ends DONE (FAILED where it names a task, a dead letter either
        way) or HANDED_BACK (stopping, or its partition was revoked). Only a failure to produce that
        last-resort dead letter itself could still raise (the consumer loop's thread boundary logs it).
        ``first_delivery``: no process anywhere started this message before (llm_worker/offsets.py).
        """
        try:
            return self._run_message(record, ctx, first_delivery)
        except ShutdownRequested:
            return Outcome.HANDED_BACK
        except Exception as exc:  # the door: input nobody imagined must not kill the task or its worker
            log.exception("Unexpected error on message %s", record.where())
            return self._last_resort(record, ctx, exc)

    def _last_resort(self, record: Record, ctx: TaskContext, exc: Exception) -> Outcome:
        """The outcome of a message the pipeline failed on: FAILED (if its id is readable) and DLQ."""
        error = PermanentTaskError(f"internal error: {type(exc).__name__}", code=codes.INTERNAL)
        try:
            self._delivery.failed(record, error, ctx, task_id=readable_task_id(record.value), metadata=None)
        except ShutdownRequested:
            return Outcome.HANDED_BACK
        self._progress.add(failed=1)
        return Outcome.DONE

    def _run_message(self, record: Record, ctx: TaskContext, first_delivery: bool) -> Outcome:
        parsed = parse_task(record.value, self._rules)
        if isinstance(parsed, Rejected):
            try:
                self._delivery.failed(
                    record, parsed.error, ctx, task_id=parsed.task_id, metadata=parsed.metadata
                )
            except ShutdownRequested:
                return Outcome.HANDED_BACK
            self._progress.task_rejected(code_index=codes.counted_index(parsed.error.code))
            return Outcome.DONE
        run = self._new_run(record, parsed, ctx)
        run.first_delivery = first_delivery
        log.info(log_lines.PROCESSING_TASK, parsed.task_id, self._delivery.worker_id)
        try:
            lease = self._leases.acquire(parsed.task_id, ctx.sleep)
        except ShutdownRequested:
            self._dropped(run)
            return Outcome.HANDED_BACK
        try:
            return self._run(run)
        finally:
            lease.release()
            self._cleanup(run)

    def quarantine(self, record: Record, ctx: TaskContext, *, deaths: int) -> Outcome:
        """A message that killed ``deaths`` workers: FAILED (POISON) and a dead letter, never run.

        Parsing is all it gets, to name the task: the FAILED status and the final-status marker let a
        client waiting on the task see the end, and a new message for it gets this outcome back.
        """
        error = PermanentTaskError(
            f"the message killed {deaths} workers that ran it; quarantined without running it",
            code=codes.POISON,
        )
        parsed = parse_task(record.value, self._rules)
        if isinstance(parsed, TaskSpec):
            return self._quarantine_task(self._new_run(record, parsed, ctx), error)
        try:
            self._delivery.failed(record, error, ctx, task_id=parsed.task_id, metadata=parsed.metadata)
        except ShutdownRequested:
            return Outcome.HANDED_BACK
        self._progress.add(failed=1)
        return Outcome.DONE

    def _quarantine_task(self, run: TaskRun, error: TaskError) -> Outcome:
        """FAILED POISON for a named task, unless its final status is already out (then as usual)."""
        try:
            if self._final.already_final(run):
                return Outcome.DONE
        except ShutdownRequested:
            self._dropped(run)
            return Outcome.HANDED_BACK
        except TaskError as exc:
            log.warning("Could not look for the final status of task %s: %s", run.spec.task_id, exc)
        return self._failed(run, error)

    def _new_run(self, record: Record, spec: TaskSpec, ctx: TaskContext) -> TaskRun:
        started = self._clock()
        return TaskRun(
            record=record,
            spec=spec,
            ctx=ctx,
            entry=self._progress.task_started(spec.task_id),
            started=started,
            deadline=started + self._task_timeout_s,
            budget=CallBudget(limit=self._max_model_calls),
        )

    def _run(self, run: TaskRun) -> Outcome:
        spec = run.spec
        try:
            if self._final.already_final(run):
                return Outcome.DONE
            self._delivery.queue(self._delivery.for_run(run, TaskStatus.RECEIVED))
            if self._final.result_may_exist(run) and self._final.reemit_existing(run):
                return Outcome.DONE
            chat = self._attempts(run)
            self._complete(run, chat)
            return Outcome.DONE
        except ShutdownRequested:
            self._dropped(run)
            return Outcome.HANDED_BACK
        except TaskError as error:
            return self._failed(run, error)
        except Exception as exc:  # a bug must not kill the task thread silently or block the partition
            log.exception("Unexpected error in task %s", spec.task_id)
            internal = PermanentTaskError(f"internal error: {type(exc).__name__}: {exc}", code=codes.INTERNAL)
            return self._failed(run, internal)

    def _failed(self, run: TaskRun, error: TaskError) -> Outcome:
        try:
            self._delivery.failed(
                run.record,
                error,
                run.ctx,
                task_id=run.spec.task_id,
                metadata=run.spec.metadata,
                attempt=max(run.attempt, 1),
            )
        except ShutdownRequested:
            self._dropped(run)
            return Outcome.HANDED_BACK
        self._final.mark(run, TaskStatus.FAILED, error={"code": error.code, "message": str(error)})
        self._progress.task_finished(
            run.entry,
            ok=False,
            code_index=codes.counted_index(error.code),
        )
        return Outcome.DONE

    def _dropped(self, run: TaskRun) -> None:
        self._progress.task_dropped(run.entry)
        log.info("Task %s handed back unfinished (stopping, or its partition was revoked)", run.spec.task_id)

    # --- the steps -------------------------------------------------------------------------------

    def _attempts(self, run: TaskRun) -> ChatResult:
        """Call the model until it answers; transient failures retry, an open breaker waits for free."""
        while True:
            self._take_place(run)
            self._holds.wait(run)  # in its place: the capacity counts held tasks (consumer_loop.py)
            try:
                chat = self._attempt(run)
            except PaymentRequiredError as error:
                self._holds.payment_refused(run, error)
            except BreakerOpenError:
                self._wait_breaker(run)
            except ProbeFailedError as error:
                self._before_retry(run, error)
            except TransientTaskError as error:
                if run.budget.spent:
                    raise  # TASK_MAX_MODEL_CALLS: no attempt, and no wait for the breaker, can help
                if self._host_outage(run, error):
                    self._wait_breaker(run)
                else:
                    self._before_retry(run, error)
            else:
                self._holds.spent(run, chat)
                return chat

    def _host_outage(self, run: TaskRun, error: TransientTaskError) -> bool:
        """A failure while the breaker is open (the call that opened it) is the model host's, not the task's.

        A failed half-open probe is the task's (ProbeFailedError): else one prompt that always fails
        would be the probe again and again, never fail, and hold the breaker open forever. A timeout
        is the task's too: its own deadline ran out.
        """
        return error.code != codes.TIMED_OUT and self._breaker_open(run.spec.model)

    def _costs_attempt(self, run: TaskRun, error: BaseException | None) -> bool:
        """Whether an attempt that ended with ``error`` (None: the model answered) counts as one.

        The one place attempts are counted. A call refused before anything was sent (breaker open,
        402/403) and a failure during the host's outage cost nothing; everything else does, an S3
        failure reading the input included.
        """
        if isinstance(error, (BreakerOpenError, PaymentRequiredError)):
            return False
        if isinstance(error, ProbeFailedError) or run.budget.spent:
            return True
        return not (isinstance(error, TransientTaskError) and self._host_outage(run, error))

    def _attempt(self, run: TaskRun) -> ChatResult:
        """One attempt, numbered ``run.attempt + 1``; ``run.attempt`` moves on once it is known to count."""
        self._require_time(run)
        number = run.attempt + 1
        error: BaseException | None = None
        try:
            return self._try(run, number)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self._costs_attempt(run, error):
                run.attempt = number

    def _take_place(self, run: TaskRun) -> None:
        """From here on the task holds a place, if it got ready ahead of one (llm_worker/places.py)."""
        if not run.ctx.has_place:
            self._progress.task_stage(run.entry, Stage.WAITING_PLACE)
            run.ctx.take_place()

    def _try(self, run: TaskRun, number: int) -> ChatResult:
        if run.content is None and run.spec.input is not None:
            self._progress.task_stage(run.entry, Stage.READING_INPUT)
            run.content = classify(self._storage.read_input(run.spec.input), run.spec.input.key)
        run.ctx.check()  # last chance to hand the task back before it costs tokens
        self._progress.task_stage(run.entry, Stage.CALLING_MODEL)
        if isinstance(run.content, DocumentInput) and run.file_id is None:
            doc = run.content
            run.file_id = self._model.upload_file(
                task_id=run.spec.task_id,
                filename=doc.filename,
                data=doc.data,
                content_type=doc.content_type,
                deadline=run.deadline,
            )
        messages = build_messages(run.spec, run.content, run.file_id)
        if number > run.announced:
            run.announced = number
            self._delivery.queue(self._delivery.for_run(run, TaskStatus.PROCESSING, attempt=number))
        run.ctx.under_way()  # the others' background work no longer waits for this task
        return self._chat(run, messages)

    def _chat(self, run: TaskRun, messages: list[dict[str, Any]]) -> ChatResult:
        """One chat request, counted for the metrics (model calls and errors); a breaker refusal sent none."""
        params = dict(run.spec.params)
        fallback = params.pop(FALLBACK_PARAM, True)  # ours, not the model's
        try:
            chat = self._model.chat(
                task_id=run.spec.task_id,
                messages=messages,
                model=run.spec.model,
                params=params,
                deadline=run.deadline,
                budget=run.budget,
                fallback=fallback,
            )
        except BreakerOpenError:
            raise
        except TaskError:
            self._progress.add(model_calls=1, model_errors=1)
            raise
        self._progress.add(model_calls=1)
        return chat

    def _require_time(self, run: TaskRun) -> None:
        if self._clock() >= run.deadline:
            raise TransientTaskError(
                f"no time left within TASK_TIMEOUT_S={self._task_timeout_s:g}s", code=codes.TIMED_OUT
            )

    def _before_retry(self, run: TaskRun, error: TransientTaskError) -> None:
        """Pause before the next attempt, or re-raise when attempts or time are spent."""
        failures = max(run.attempt, 1)
        pause = self._retry.delay(failures)
        if failures >= self._retry.max_attempts or self._clock() + pause >= run.deadline:
            raise error
        log.info(
            "Task %s attempt %d failed (%s: %s); retrying in %.1fs",
            run.spec.task_id,
            failures,
            error.code,
            error,
            pause,
        )
        self._progress.add(retried=1)
        self._progress.task_stage(run.entry, Stage.RETRY_WAIT)
        run.ctx.sleep(pause)

    def _wait_breaker(self, run: TaskRun) -> None:
        """Park until the breaker may admit a call; the time parked does not count against the deadline."""
        self._progress.task_stage(run.entry, Stage.RETRY_WAIT)
        waited_from = self._clock()
        run.ctx.sleep(self._breaker_poll_s)
        run.deadline += self._clock() - waited_from

    def _complete(self, run: TaskRun, chat: ChatResult) -> None:
        """Write the result, publish COMPLETED, mark the task final. Its place goes to the next task
        first, and this work gives way to the tasks starting their model calls (llm_worker/places.py)."""
        spec = run.spec
        processing_ms = (self._clock() - run.started) * 1000.0
        run.ctx.release_place()
        self._progress.task_stage(run.entry, Stage.WRITING_RESULT)
        run.ctx.give_way()
        body = result_object(
            spec,
            chat,
            worker_id=self._delivery.worker_id,
            processing_ms=processing_ms,
            created_at=iso_timestamp(self._wall_clock()),
        )
        write_until = max(run.deadline, self._clock() + MIN_WRITE_WINDOW_S)
        self._s3_retry(lambda: self._storage.write_json(spec.output, body), run, write_until)
        self._progress.task_stage(run.entry, Stage.PUBLISHING)
        event = self._delivery.for_run(
            run,
            TaskStatus.COMPLETED,
            tokens_used=chat.total_tokens,
            processing_ms=processing_ms,
            result=spec.output.as_dict(),
        )
        event["model"] = chat.model  # which model answered: the task's own or a fallback
        self._delivery.final(event, run.ctx)
        run.ctx.give_way()
        self._final.mark(
            run,
            TaskStatus.COMPLETED,
            tokens_used=chat.total_tokens,
            processing_ms=round(processing_ms, 1),
            result=spec.output.as_dict(),
        )
        self._progress.task_finished(
            run.entry,
            ok=True,
            tokens=chat.total_tokens,
            processing_ms=processing_ms,
        )
        log.info(log_lines.TASK_COMPLETED, spec.task_id, chat.total_tokens)
        log.info(log_lines.TASK_PROCESSED_IN, spec.task_id, processing_ms)

    def _cleanup(self, run: TaskRun) -> None:
        if run.file_id is None:
            return
        try:
            self._model.delete_file(task_id=run.spec.task_id, file_id=run.file_id)
        except TaskError as exc:
            log.warning(
                "Could not delete uploaded file %s of task %s: %s", run.file_id, run.spec.task_id, exc
            )
