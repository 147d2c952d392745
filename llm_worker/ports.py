"""What the task pipeline needs from the world, as small protocols.

Production passes the real objects named in each docstring; tests/worker/test_pipeline.py passes
fakes, so the pipeline's decisions are unit-tested without a broker, S3 or a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from llm_service.errors import TaskError
from llm_service.status_table import Stage
from llm_worker.budget_gate import Hold
from llm_worker.events import Delivery, Source
from llm_worker.gigachat.budget import CallBudget
from llm_worker.gigachat.models import ChatResult
from llm_worker.task_lease import Lease
from llm_worker.task_message import ObjectRef, TaskSpec


class ObjectStore(Protocol):
    """Input and result objects (llm_worker.storage.Storage)."""

    def read_input(self, ref: ObjectRef) -> bytes: ...
    def read_json(self, ref: ObjectRef) -> dict[str, Any] | None: ...
    def write_json(self, ref: ObjectRef, body: dict[str, Any]) -> None: ...


class Model(Protocol):
    """The model API (llm_worker.gigachat.client.GigaChatClient)."""

    def chat(
        self,
        *,
        task_id: str,
        messages: list[dict[str, Any]],
        model: str,
        params: Mapping[str, Any],
        deadline: float,
        fallback: bool = True,
        budget: CallBudget | None = None,
    ) -> ChatResult: ...
    def upload_file(
        self, *, task_id: str, filename: str, data: bytes, content_type: str, deadline: float
    ) -> str: ...
    def delete_file(self, *, task_id: str, file_id: str) -> None: ...


class Publisher(Protocol):
    """Status events and dead letters (llm_worker.events.EventPublisher)."""

    @property
    def worker_id(self) -> str: ...
    def status(self, event: dict[str, Any], *, cut: bool = False) -> Delivery: ...
    def dead_letter(
        self,
        *,
        raw: bytes | None,
        key: bytes | None,
        task_id: str | None,
        error: TaskError,
        source: Source,
        limit: int | None = None,
    ) -> Delivery: ...


class Leases(Protocol):
    """One run of a task id at a time on this host (llm_worker.task_lease.TaskLeases)."""

    def acquire(self, task_id: str, wait: Callable[[float], None]) -> Lease: ...


class Progress(Protocol):
    """The worker's slot in the status table (llm_service.status_table.SlotWriter)."""

    def task_started(self, task_id: str) -> int: ...
    def task_stage(self, entry: int, stage: Stage) -> None: ...
    def task_finished(
        self,
        entry: int,
        *,
        ok: bool,
        tokens: int = 0,
        processing_ms: float = 0.0,
        code_index: int = -1,
    ) -> None: ...
    def task_rejected(self, *, code_index: int) -> None: ...
    def task_dropped(self, entry: int) -> None: ...
    def add(self, **deltas: float | int) -> None: ...


class Gate(Protocol):
    """Budgets and the account's payment state (llm_worker/budget_gate.py)."""

    def task_hold(self, tenant: str | None) -> Hold | None: ...
    def tenant_of(self, spec: TaskSpec) -> str | None: ...
    def spent(self, *, tokens: int, tenant: str | None) -> None: ...
    def refused(self, status: int) -> None: ...
    def hold_started(self) -> None: ...
    def hold_ended(self) -> None: ...
