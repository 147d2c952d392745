"""Status events and dead letters, produced through one idempotent KafkaProducer per worker.

Both are keyed by ``task_id``, so all events of a task land on one partition in order. The producer
is thread-safe; task threads call :meth:`EventPublisher.status` and :meth:`EventPublisher.dead_letter`
and wait on the returned delivery before they hand a completion to the consumer thread, which is
what makes "publish, then commit" hold.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer

from llm_service import log_lines
from llm_service.clients import kafka_options
from llm_service.config import Settings
from llm_service.errors import TaskError
from llm_service.logs import iso_timestamp
from llm_service.task_status import TaskStatus

log = logging.getLogger(__name__)

# Room for the record's headers and batch framing within max_request_size.
DLQ_HEADROOM_BYTES = 16 * 1024
# A dead letter the broker still rejects as too large is sent again cut to this size (below the
# broker's default message.max.bytes of 1 MiB), marked truncated, so the poison message still leaves
# its partition.
DLQ_FALLBACK_BYTES = 900 * 1024


class Delivery(Protocol):
    """What ``KafkaProducer.send`` returns: wait for the broker's acknowledgement."""

    def get(self, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class Source:
    """Where a message came from, for the DLQ headers."""

    topic: str
    partition: int
    offset: int


def make_producer(settings: Settings, *, client_id: str) -> KafkaProducer:
    """The worker's producer: idempotent, acks=all (the kafka-python 3.0 defaults, spelled out)."""
    return KafkaProducer(
        **kafka_options(settings),
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,  # batches the status events of many tasks finishing together
        max_request_size=settings.kafka_max_request_bytes,
    )


def status_event(
    *,
    task_id: str,
    status: TaskStatus,
    worker_id: str,
    attempt: int,
    metadata: dict[str, Any] | None,
    tokens_used: int | None = None,
    processing_ms: float | None = None,
    result: dict[str, str] | None = None,
    error: TaskError | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """One status message as CONTRACT.md shows it."""
    return {
        "task_id": task_id,
        "status": int(status),
        "status_name": status.name,
        "worker_id": worker_id,
        "attempt": attempt,
        "ts": iso_timestamp(time.time() if now is None else now),
        "tokens_used": tokens_used,
        "processing_ms": None if processing_ms is None else round(processing_ms, 1),
        "result": result,
        "error": None if error is None else {"code": error.code, "message": str(error)},
        "metadata": metadata,
    }


def dlq_headers(
    *, error: TaskError, source: Source, worker_id: str, task_id: str | None
) -> list[tuple[str, bytes]]:
    headers = [
        ("error_code", error.code.encode()),
        ("error_message", str(error).encode("utf-8", "replace")[:1024]),
        ("source_topic", source.topic.encode()),
        ("source_partition", str(source.partition).encode()),
        ("source_offset", str(source.offset).encode()),
        ("worker_id", worker_id.encode()),
    ]
    if task_id is not None:
        headers.append(("task_id", task_id.encode()))
    return headers


class EventPublisher:
    """Sends status events and dead letters; ``on_error`` counts failed sends (kafka_errors)."""

    def __init__(
        self,
        *,
        producer: KafkaProducer,
        status_topic: str,
        dlq_topic: str,
        worker_id: str,
        max_request_bytes: int,
        on_error: Callable[[], None],
    ) -> None:
        self._producer = producer
        self._status_topic = status_topic
        self._dlq_topic = dlq_topic
        self._worker_id = worker_id
        self._max_dlq_bytes = max(1024, max_request_bytes - DLQ_HEADROOM_BYTES)
        self._on_error = on_error

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def status(self, event: dict[str, Any]) -> Delivery:
        """Queue one status event (built by :func:`status_event`); the log line follows the broker's ack."""
        task_id, code = event["task_id"], event["status"]
        value = json.dumps(event, ensure_ascii=False).encode("utf-8")
        delivery = self._producer.send(self._status_topic, value=value, key=task_id.encode())
        delivery.add_callback(self._acked, code, task_id)
        delivery.add_errback(self._status_failed, code, task_id)
        return delivery  # type: ignore[no-any-return]

    def dead_letter(
        self,
        *,
        raw: bytes | None,
        key: bytes | None,
        task_id: str | None,
        error: TaskError,
        source: Source,
        limit: int | None = None,
    ) -> Delivery:
        """Queue the original message bytes for the DLQ, cut to ``limit`` (or what the producer allows)."""
        value = raw or b""
        headers = dlq_headers(error=error, source=source, worker_id=self._worker_id, task_id=task_id)
        cap = min(limit or self._max_dlq_bytes, self._max_dlq_bytes)
        if len(value) > cap:
            headers += [("truncated", b"true"), ("original_size", str(len(value)).encode())]
            value = value[:cap]
        record_key = task_id.encode() if task_id is not None else key
        delivery = self._producer.send(self._dlq_topic, value=value, key=record_key, headers=headers)
        delivery.add_errback(lambda exc: self._failed(f"dead letter of {source}", exc))
        return delivery  # type: ignore[no-any-return]

    def _acked(self, code: int, task_id: str, _metadata: Any) -> None:
        # Runs on the producer's IO thread once the broker has the event.
        log.info(log_lines.STATUS_SENT, code, task_id)

    def _status_failed(self, code: int, task_id: str, exc: BaseException) -> None:
        self._failed(f"status {code} of task {task_id}", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._on_error()
        log.warning("Kafka did not take the %s: %s", what, exc)

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float) -> None:
        self._producer.close(timeout=timeout)
