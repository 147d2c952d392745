"""One task from message to final status: validate → (final status already sent? stop) → RECEIVED →
(result exists? re-emit COMPLETED) → read input → PROCESSING → chat → write result → COMPLETED; or
FAILED plus a dead letter.

Exactly one final status per task, across crashes: a worker killed after its final status was
acknowledged but before the offset was committed leaves a redelivery behind. Once the final status
is acknowledged, the pipeline writes a small marker object (``ObjectRef.final_marker``); a redelivered
task that finds it ends quietly. Only a crash in the few milliseconds between the acknowledgement and
the marker can still repeat a final status, instead of the whole commit interval.

Runs in a task thread, one call of :meth:`TaskPipeline.run` per Kafka message. It never commits:
it returns an :class:`Outcome` once the final status (and dead letter) is acknowledged by Kafka,
and the consumer thread commits. Dependencies come in as small protocols, so the decisions here
are unit-tested with fakes (tests/worker/test_pipeline.py). Its neighbours: llm_worker/ports.py (the
protocols), task_context.py (record, context, outcome), status_delivery.py (statuses and dead letters
to Kafka), task_result.py (chat messages, result object), retry_policy.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
from llm_worker.budget_gate import Hold
from llm_worker.decoding import DocumentInput, TextInput, classify
from llm_worker.gigachat.budget import CallBudget
from llm_worker.gigachat.models import ChatResult
from llm_worker.ports import Gate, Leases, Model, ObjectStore, Progress, Publisher
from llm_worker.retry_policy import RetryPolicy
from llm_worker.status_delivery import StatusDelivery
from llm_worker.task_context import Outcome, Record, TaskContext
from llm_worker.task_message import (
    FALLBACK_PARAM,
    Rejected,
    TaskRules,
    TaskSpec,
    parse_task,
    readable_task_id,
)
from llm_worker.task_result import build_messages, result_object

log = logging.getLogger(__name__)
T = TypeVar("T")

BREAKER_POLL_S = 1.0  # how often a task parked on an open breaker tries again (the probe comes from here)
MIN_WRITE_WINDOW_S = 30.0  # a paid-for answer gets this long to reach S3 even past the task deadline


@dataclass(kw_only=True)
class _Run:
    """What one task run knows so far (owned by its task thread)."""

    record: Record
    spec: TaskSpec
    ctx: TaskContext
    entry: int
    started: float
    deadline: float
    attempt: int = 0
    announced: int = 0  # the last attempt a PROCESSING status was sent for
    content: TextInput | DocumentInput | None = None
    file_id: str | None = None
    budget: CallBudget = field(default_factory=lambda: CallBudget(limit=1))

    @property
    def source(self) -> dict[str, Any]:
        return {"topic": self.record.topic, "partition": self.record.partition, "offset": self.record.offset}


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
        self._gate = gate
        self._clock = clock
        self._wall_clock = wall_clock

    def run(self, record: Record, ctx: TaskContext) -> Outcome:
        """Task-thread entry, the door of a raw Kafka record: process it to its final status.

        Whatever the message holds, it ends DONE (FAILED where it names a task, a dead letter either
        way) or HANDED_BACK (stopping, or its partition was revoked). Only a failure to produce that
        last-resort dead letter itself could still raise (the consumer loop's thread boundary logs it).
        """
        try:
            return self._run_message(record, ctx)
        except ShutdownRequested:
            return Outcome.HANDED_BACK
        except Exception as exc:  # the door: input nobody imagined must not kill the task or its worker
            log.exception("Unexpected error on message %s", record.where())
            return self._last_resort(record, ctx, exc)

    def _last_resort(self, record: Record, ctx: TaskContext, exc: Exception) -> Outcome:
        """The outcome of a message the pipeline failed on: FAILED (if its id is readable) and DLQ."""
        error = PermanentTaskError(f"internal error: {type(exc).__name__}", code=codes.INTERNAL)
        try:
            self._fail(record, error, ctx, task_id=readable_task_id(record.value), metadata=None)
        except ShutdownRequested:
            return Outcome.HANDED_BACK
        self._progress.add(failed=1)
        return Outcome.DONE

    def _run_message(self, record: Record, ctx: TaskContext) -> Outcome:
        parsed = parse_task(record.value, self._rules)
        if isinstance(parsed, Rejected):
            try:
                self._fail(record, parsed.error, ctx, task_id=parsed.task_id, metadata=parsed.metadata)
            except ShutdownRequested:
                return Outcome.HANDED_BACK
            self._progress.task_rejected(code_index=codes.counted_index(parsed.error.code))
            return Outcome.DONE
        run = self._new_run(record, parsed, ctx)
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
            self._fail(record, error, ctx, task_id=parsed.task_id, metadata=parsed.metadata)
        except ShutdownRequested:
            return Outcome.HANDED_BACK
        self._progress.add(failed=1)
        return Outcome.DONE

    def _quarantine_task(self, run: _Run, error: TaskError) -> Outcome:
        """FAILED POISON for a named task, unless its final status is already out (then as usual)."""
        try:
            if self._already_final(run):
                return Outcome.DONE
        except ShutdownRequested:
            self._dropped(run)
            return Outcome.HANDED_BACK
        except TaskError as exc:
            log.warning("Could not look for the final status of task %s: %s", run.spec.task_id, exc)
        return self._failed(run, error)

    def _new_run(self, record: Record, spec: TaskSpec, ctx: TaskContext) -> _Run:
        started = self._clock()
        return _Run(
            record=record,
            spec=spec,
            ctx=ctx,
            entry=self._progress.task_started(spec.task_id),
            started=started,
            deadline=started + self._task_timeout_s,
            budget=CallBudget(limit=self._max_model_calls),
        )

    def _run(self, run: _Run) -> Outcome:
        spec = run.spec
        try:
            if self._already_final(run):
                return Outcome.DONE
            self._delivery.queue(self._event(run, TaskStatus.RECEIVED))
            if self._reemit_existing(run):
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

    def _failed(self, run: _Run, error: TaskError) -> Outcome:
        try:
            self._fail(
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
        self._mark_final(run, TaskStatus.FAILED, error={"code": error.code, "message": str(error)})
        self._progress.task_finished(run.entry, ok=False, code_index=codes.counted_index(error.code))
        return Outcome.DONE

    def _dropped(self, run: _Run) -> None:
        self._progress.task_dropped(run.entry)
        log.info("Task %s handed back unfinished (stopping, or its partition was revoked)", run.spec.task_id)

    # --- the steps -------------------------------------------------------------------------------

    def _already_final(self, run: _Run) -> bool:
        """The task's final status is already out: a redelivery sends nothing, a new message gets it again.

        The marker lists the messages that got the final status. One of them delivered again (a
        crash before its commit) ends silently; a different message for the same task_id (a client
        sending it again, a duplicate) gets the stored outcome republished, without a model call.
        A marker written before sources were noted counts as the same message.
        """
        marker: dict[str, Any] | None = self._with_retries(
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

    def _republish(
        self, run: _Run, marker: dict[str, Any], outcome: dict[str, Any], sources: list[Any]
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
        event = self._event(
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
        self._write_marker(run, {**marker, "sources": [*sources[-15:], run.source]})
        self._progress.task_dropped(run.entry)
        return True

    def _mark_final(self, run: _Run, status: TaskStatus, **outcome: Any) -> None:
        """Note that the final status is acknowledged, with what it said and which message got it."""
        marker = {
            "task_id": run.spec.task_id,
            "status": int(status),
            "ts": iso_timestamp(self._wall_clock()),
            "sources": [run.source],
            "outcome": {"attempt": max(run.attempt, 1), **outcome},
        }
        self._write_marker(run, marker)

    def _write_marker(self, run: _Run, marker: dict[str, Any]) -> None:
        """A failure here only risks a repeated final status."""
        ref = run.spec.output.final_marker()
        try:
            self._with_retries(lambda: self._storage.write_json(ref, marker), run, self._clock() + 10.0)
        except TaskError as exc:
            log.warning("Could not note the final status of task %s: %s", run.spec.task_id, exc)

    def _reemit_existing(self, run: _Run) -> bool:
        """A result object written by an earlier delivery: publish COMPLETED again from it, no model call."""
        body: dict[str, Any] | None = self._with_retries(
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
        event = self._event(
            run,
            TaskStatus.COMPLETED,
            tokens_used=tokens if isinstance(tokens, int) else 0,
            processing_ms=float(ms) if isinstance(ms, (int, float)) else None,
            result=run.spec.output.as_dict(),
        )
        event["model"] = body.get("model")
        self._delivery.final(event, run.ctx)
        self._mark_final(
            run,
            TaskStatus.COMPLETED,
            tokens_used=event["tokens_used"],
            processing_ms=event["processing_ms"],
            result=run.spec.output.as_dict(),
        )
        self._progress.task_finished(run.entry, ok=True, tokens=0, processing_ms=0.0)
        return True

    def _attempts(self, run: _Run) -> ChatResult:
        """Call the model until it answers; transient failures retry, an open breaker waits for free."""
        while True:
            self._wait_gate(run)
            try:
                chat = self._attempt(run)
            except PaymentRequiredError as error:
                self._payment_refused(run, error)
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
                if self._gate is not None:
                    self._gate.spent(tokens=chat.total_tokens, tenant=self._gate.tenant_of(run.spec))
                return chat

    def _host_outage(self, run: _Run, error: TransientTaskError) -> bool:
        """A failure while the breaker is open (the call that opened it) is the model host's, not the task's.

        A failed half-open probe is the task's (ProbeFailedError): else one prompt that always fails
        would be the probe again and again, never fail, and hold the breaker open forever. A timeout
        is the task's too: its own deadline ran out.
        """
        return error.code != codes.TIMED_OUT and self._breaker_open(run.spec.model)

    def _costs_attempt(self, run: _Run, error: BaseException | None) -> bool:
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

    def _payment_refused(self, run: _Run, error: PaymentRequiredError) -> None:
        """402/403: not the task's fault. It costs no attempt and waits in _wait_gate with the pool."""
        log.warning("Task %s held: %s", run.spec.task_id, error)
        run.budget.give_back()
        if self._gate is None:
            raise error  # no gate to wait on (unit tests): a plain failure
        self._gate.refused(error.status)

    def _wait_gate(self, run: _Run) -> None:
        """Hold the task while its budget is spent or the model wants payment; never fail it for that.

        The time held does not count against the task's deadline. A stop or a revocation hands the
        task back (uncommitted) from ctx.sleep.
        """
        if self._gate is None:
            return
        tenant = self._gate.tenant_of(run.spec)
        hold = self._gate.task_hold(tenant)
        if hold is None:
            return
        log.info(log_lines.TASK_HELD, run.spec.task_id, hold.value)
        counted = hold is Hold.TENANT_BUDGET
        if counted:
            self._gate.hold_started()
        try:
            while hold is not None:
                if run.ctx.draining:  # a new worker (maybe with a raised budget) takes it at once
                    raise ShutdownRequested("task handed back: waiting for its budget while draining")
                self._progress.task_stage(run.entry, Stage.RETRY_WAIT)
                waited_from = self._clock()
                run.ctx.sleep(self._breaker_poll_s)
                run.deadline += self._clock() - waited_from
                hold = self._gate.task_hold(tenant)
        finally:
            if counted:
                self._gate.hold_ended()

    def _attempt(self, run: _Run) -> ChatResult:
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

    def _try(self, run: _Run, number: int) -> ChatResult:
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
            self._delivery.queue(self._event(run, TaskStatus.PROCESSING, attempt=number))
        return self._chat(run, messages)

    def _chat(self, run: _Run, messages: list[dict[str, Any]]) -> ChatResult:
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

    def _require_time(self, run: _Run) -> None:
        if self._clock() >= run.deadline:
            raise TransientTaskError(
                f"no time left within TASK_TIMEOUT_S={self._task_timeout_s:g}s", code=codes.TIMED_OUT
            )

    def _before_retry(self, run: _Run, error: TransientTaskError) -> None:
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

    def _wait_breaker(self, run: _Run) -> None:
        """Park until the breaker may admit a call; the time parked does not count against the deadline."""
        self._progress.task_stage(run.entry, Stage.RETRY_WAIT)
        waited_from = self._clock()
        run.ctx.sleep(self._breaker_poll_s)
        run.deadline += self._clock() - waited_from

    def _complete(self, run: _Run, chat: ChatResult) -> None:
        spec = run.spec
        processing_ms = (self._clock() - run.started) * 1000.0
        self._progress.task_stage(run.entry, Stage.WRITING_RESULT)
        body = result_object(
            spec,
            chat,
            worker_id=self._delivery.worker_id,
            processing_ms=processing_ms,
            created_at=iso_timestamp(self._wall_clock()),
        )
        write_until = max(run.deadline, self._clock() + MIN_WRITE_WINDOW_S)
        self._with_retries(lambda: self._storage.write_json(spec.output, body), run, write_until)
        self._progress.task_stage(run.entry, Stage.PUBLISHING)
        event = self._event(
            run,
            TaskStatus.COMPLETED,
            tokens_used=chat.total_tokens,
            processing_ms=processing_ms,
            result=spec.output.as_dict(),
        )
        event["model"] = chat.model  # which model answered: the task's own or a fallback
        self._delivery.final(event, run.ctx)
        self._mark_final(
            run,
            TaskStatus.COMPLETED,
            tokens_used=chat.total_tokens,
            processing_ms=round(processing_ms, 1),
            result=spec.output.as_dict(),
        )
        self._progress.task_finished(
            run.entry, ok=True, tokens=chat.total_tokens, processing_ms=processing_ms
        )
        log.info(log_lines.TASK_COMPLETED, spec.task_id, chat.total_tokens)
        log.info(log_lines.TASK_PROCESSED_IN, spec.task_id, processing_ms)

    def _with_retries(self, operation: Callable[[], T], run: _Run, until: float) -> T:
        """Retry an S3 operation on transient errors until ``until`` (monotonic)."""
        failures = 0
        while True:
            try:
                return operation()
            except TransientTaskError:
                failures += 1
                pause = self._retry.delay(min(failures, self._retry.max_attempts))
                if self._clock() + pause >= until:
                    raise
                self._progress.task_stage(run.entry, Stage.RETRY_WAIT)
                run.ctx.sleep(pause)

    def _cleanup(self, run: _Run) -> None:
        if run.file_id is None:
            return
        try:
            self._model.delete_file(task_id=run.spec.task_id, file_id=run.file_id)
        except TaskError as exc:
            log.warning(
                "Could not delete uploaded file %s of task %s: %s", run.file_id, run.spec.task_id, exc
            )

    # --- publishing ------------------------------------------------------------------------------

    def _event(self, run: _Run, status: TaskStatus, *, attempt: int = 0, **fields: Any) -> dict[str, Any]:
        return self._delivery.event(
            task_id=run.spec.task_id,
            status=status,
            attempt=attempt or max(run.attempt, 1),
            metadata=run.spec.metadata,
            **fields,
        )

    def _fail(
        self,
        record: Record,
        error: TaskError,
        ctx: TaskContext,
        *,
        task_id: str | None,
        metadata: dict[str, Any] | None,
        attempt: int = 1,
    ) -> None:
        """FAILED status (when the task id is known) and the dead letter, both acknowledged."""
        log.warning(log_lines.TASK_FAILED, task_id or f"<{record.where()}>", f"{error.code}: {error}")
        self._delivery.failed(record, error, ctx, task_id=task_id, metadata=metadata, attempt=attempt)
