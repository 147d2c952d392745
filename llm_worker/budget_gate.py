"""May a task call the model now? The daily token budgets and the account's payment state decide.

Checked by the pipeline before every model call (a task whose budget is spent never calls the model
and is never failed: it waits, held by its worker) and by the consumer loop for intake:

- pool budget spent (GIGACHAT_TOKEN_BUDGET_DAILY) or a 402/403 pause: every worker of the host pauses
  intake (capacity 0; 1 during a payment pause, so that one task can be the probe).
- tenant budget spent (GIGACHAT_TENANT_BUDGETS): that tenant's tasks are held, each in a task thread,
  and do not count against the worker's concurrency, so the other tenants' tasks (on the same
  partitions) keep flowing. A held task stays uncommitted (a crash redelivers it); at most
  GIGACHAT_TENANT_HELD_MAX per worker, beyond which the worker pauses intake.

Spending is read from the host's spend file (llm_worker/spending.py) at most every ``refresh_s``.
With no budget configured the day's tokens are only reported (``llmctl status``, the budget gauges):
the task threads then add them up in memory and the consumer loop writes the sum at most every
``refresh_s`` (and when the worker stops), so a task no longer takes the host's spend-file lock.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llm_service.config import Settings
from llm_worker.spending import Spend, SpendingFiles
from llm_worker.task_message import TaskSpec

log = logging.getLogger(__name__)

REFRESH_S = 1.0


class Hold(enum.Enum):
    """Why a task may not call the model now."""

    POOL_BUDGET = "pool budget spent"
    TENANT_BUDGET = "tenant budget spent"
    PAYMENT = "model payment required"


@dataclass(frozen=True)
class Budgets:
    """The configured daily budgets; 0 or absent means none."""

    pool: int
    tenants: Mapping[str, int]
    tenant_field: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Budgets:
        return cls(
            pool=settings.gigachat_token_budget_daily,
            tenants=parse_tenant_budgets(settings.gigachat_tenant_budgets),
            tenant_field=settings.task_tenant_field,
        )

    @property
    def any_limit(self) -> bool:
        """A pool or tenant budget is set: the spend file gates tasks, not only reports them."""
        return self.pool > 0 or any(limit > 0 for limit in self.tenants.values())

    def tenant_of(self, task: Mapping[str, Any]) -> str | None:
        """The tenant named by TASK_TENANT_FIELD (a dotted path into the task), or None."""
        if not self.tenant_field:
            return None
        value: Any = task
        for part in self.tenant_field.split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value if isinstance(value, str) and value else None


def parse_tenant_budgets(raw: str) -> dict[str, int]:
    """``sales=200000,ops=50000`` -> {"sales": 200000, "ops": 50000} (checked by llm_service.config)."""
    budgets: dict[str, int] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        name, _, amount = part.partition("=")
        budgets[name.strip()] = int(amount.strip())
    return budgets


def spent_reason(budgets: Budgets, spend: Spend) -> Hold | None:
    return Hold.POOL_BUDGET if budgets.pool > 0 and spend.pool >= budgets.pool else None


def tenant_spent(budgets: Budgets, spend: Spend, tenant: str | None) -> bool:
    limit = budgets.tenants.get(tenant, 0) if tenant is not None else 0
    return limit > 0 and spend.tenants.get(tenant or "", 0) >= limit


class SpendGate:
    """One per worker process, shared by its task threads and its consumer thread."""

    def __init__(
        self,
        *,
        files: SpendingFiles,
        budgets: Budgets,
        probe_s: float,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._files = files
        self._budgets = budgets
        self._probe_s = probe_s
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._spend = Spend(day="")
        self._payment = False
        self._held = 0
        # No budget: tokens wait here for the next refresh (each add under the host's flock cost
        # ~0.2 ms of CPU at 64 task threads). A kill -9 loses at most refresh_s of them from the report.
        self._deferred = not budgets.any_limit
        self._pending_pool = 0
        self._pending_tenants: dict[str, int] = {}

    @property
    def budgets(self) -> Budgets:
        return self._budgets

    @property
    def files(self) -> SpendingFiles:
        return self._files

    def tenant_of(self, spec: TaskSpec) -> str | None:
        """The task's tenant: TASK_TENANT_FIELD looked up in task_id, model and metadata.*."""
        return self._budgets.tenant_of(
            {"task_id": spec.task_id, "model": spec.model, "metadata": spec.metadata}
        )

    def _refresh(self, *, wait: bool = True) -> Spend:
        """The day's spending, read again at most every refresh_s.

        ``wait=False`` (the consumer thread): while a task thread holds the gate, writing the spend
        file under the host's flock, the last known figures serve; the loop never waits for a file.
        """
        if not self._lock.acquire(blocking=wait):
            return self._spend
        try:
            if self._clock() - self._read_at >= self._refresh_s:
                self._write_pending()
                if not self._deferred:  # with no budget nothing compares against it
                    self._spend = self._files.spent()
                self._payment = self._files.payment() is not None
                self._read_at = self._clock()
            return self._spend
        finally:
            self._lock.release()

    def flush(self) -> None:
        """Write the tokens not yet in the spend file (the worker calls it on its way out)."""
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        # The caller holds self._lock.
        pool, tenants = self._pending_pool, self._pending_tenants
        if pool <= 0:
            return
        try:
            spend = self._files.add_many(pool=pool, tenants=tenants)
        except OSError as exc:  # kept for the next try: neither a loop nor a paid answer dies of it
            log.warning("Spend file not written (%s); %d tokens kept for the next try", exc, pool)
            return
        self._pending_pool, self._pending_tenants = 0, {}
        if spend is not None:  # every worker's spending, read under the host lock: the gate's view
            self._spend = spend

    def _defer(self, tokens: int, tenant: str | None) -> None:
        if tokens <= 0:
            return
        with self._lock:
            self._pending_pool += tokens
            if tenant is not None:
                self._pending_tenants[tenant] = self._pending_tenants.get(tenant, 0) + tokens

    def pool_hold(self) -> Hold | None:
        """Why the whole pool may not start tasks now (consumer thread), or None."""
        spend = self._refresh(wait=False)
        if self._payment:
            return Hold.PAYMENT
        return spent_reason(self._budgets, spend)

    def task_hold(self, tenant: str | None) -> Hold | None:
        """Why this task may not call the model now, or None (task thread, before each call).

        During a payment pause one task of the host gets through every GIGACHAT_PAYMENT_PROBE_S: the probe.
        """
        spend = self._refresh()
        if self._payment and not self._files.claim_probe(probe_s=self._probe_s):
            return Hold.PAYMENT
        reason = spent_reason(self._budgets, spend)
        if reason is not None:
            return reason
        return Hold.TENANT_BUDGET if tenant_spent(self._budgets, spend, tenant) else None

    def spent(self, *, tokens: int, tenant: str | None) -> None:
        """A call answered: count its tokens and end a payment pause.

        The spending just written (every worker's) becomes the gate's view at once, so the next check
        sees it without reading the file again: re-reading after every call cost each task and each
        consumer-loop turn two file reads."""
        self._defer(tokens, tenant)
        with self._lock:
            if not self._deferred:  # a budget compares against the file: write it now
                self._write_pending()
            self._payment = False
        try:
            if self._files.payment_ok():
                log.warning("GigaChat answered again after a 402/403; intake resumes")
        except OSError as exc:  # the answer is paid for: the task must not fail over the pause file
            log.warning("Could not end the payment pause (%s); the next answered call tries again", exc)

    def refused(self, status: int) -> None:
        """The model answered 402/403: pause the host's intake until a probe succeeds."""
        if self._files.payment_refused(status=status, probe_s=self._probe_s):
            log.error(
                "GigaChat answered HTTP %d (package spent or rights lost); intake paused, probe every %.0fs",
                status,
                self._probe_s,
            )
        with self._lock:
            self._payment = True

    def hold_started(self) -> None:
        with self._lock:
            self._held += 1

    def hold_ended(self) -> None:
        with self._lock:
            self._held -= 1

    def held(self) -> int:
        """Tasks of spent tenants this worker holds now."""
        with self._lock:
            return self._held
