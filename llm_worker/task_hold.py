"""Holding a task while money stops it: its tenant's budget is spent, or the model wants payment.

A held task is never failed for that: it waits in its thread, the time held does not count against
its deadline, and a stop or a revocation hands it back (uncommitted) from ``ctx.sleep``. The pool's
side (budgets, the 402/403 pause, the probe) is llm_worker/budget_gate.py; this is one task's side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from llm_service import log_lines
from llm_service.errors import PaymentRequiredError, ShutdownRequested
from llm_service.status_table import Stage
from llm_worker.budget_gate import Hold
from llm_worker.gigachat.models import ChatResult
from llm_worker.ports import Gate, Progress
from llm_worker.task_run import TaskRun

log = logging.getLogger(__name__)


class TaskHolds:
    """Holds tasks at the gate; ``gate=None`` (unit tests) never holds and fails a 402/403 plainly."""

    def __init__(
        self, *, gate: Gate | None, progress: Progress, poll_s: float, clock: Callable[[], float]
    ) -> None:
        self._gate = gate
        self._progress = progress
        self._poll_s = poll_s
        self._clock = clock

    def wait(self, run: TaskRun) -> None:
        """Hold the task while its budget is spent or the model wants payment."""
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
                run.ctx.sleep(self._poll_s)
                run.deadline += self._clock() - waited_from
                hold = self._gate.task_hold(tenant)
        finally:
            if counted:
                self._gate.hold_ended()

    def payment_refused(self, run: TaskRun, error: PaymentRequiredError) -> None:
        """402/403: not the task's fault. It costs no attempt and waits in :meth:`wait` with the pool."""
        log.warning("Task %s held: %s", run.spec.task_id, error)
        run.budget.give_back()
        if self._gate is None:
            raise error  # no gate to wait on (unit tests): a plain failure
        self._gate.refused(error.status)

    def spent(self, run: TaskRun, chat: ChatResult) -> None:
        """The model answered: its tokens count against the pool's and the tenant's budgets."""
        if self._gate is not None:
            self._gate.spent(tokens=chat.total_tokens, tenant=self._gate.tenant_of(run.spec))
