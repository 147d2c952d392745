"""Status events and dead letters, produced through one idempotent KafkaProducer per worker.

Both are keyed by ``task_id``, so all events of a task land on one partition in order. The producer
is thread-safe; task threads call :meth:`EventPublisher.status` and :meth:`EventPublisher.dead_letter`
and wait on the returned delivery before they hand a completion to the consumer thread, which is
what makes "publish, then commit" hold.
"""

from __future__ import annotations

import json
import logging
import math
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

# How long the producer holds a status event for others to join its request. Each produce request
# costs the worker CPU (and an acks=all round trip) whatever it carries: at 5 ms nearly every one of
# a task's three events went out alone. Only the final status is waited for, so this adds at most
# LINGER_MS to a task's time (2 % of a 1 s model call) and takes most of the producer's work away.
LINGER_MS = 25
# Room for the record's headers and batch framing within max_request_size.
DLQ_HEADROOM_BYTES = 16 * 1024
# A dead letter the broker still rejects as too large is sent again cut to this size (below the
# broker's default message.max.bytes of 1 MiB), marked truncated, so the poison message still leaves
# its partition.
DLQ_FALLBACK_BYTES = 900 * 1024
# The strings of a cut-down status event (task ids are at most MAX_READABLE_TASK_ID characters), and
# the shorter cut when even that does not fit.
CUT_TEXT_CHARS = 1024
MIN_CUT_TEXT_CHARS = 64


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
        linger_ms=LINGER_MS,
        max_request_size=settings.kafka_max_request_bytes,
        metrics_enabled=False,  # never read; its sensors cost CPU on every request and record
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
    """One status event as docs/reference.md shows it."""
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


def utf8(text: str) -> bytes:
    """UTF-8 that never raises: a lone surrogate (valid in a Python str, not in UTF-8) is escaped."""
    return text.encode("utf-8", "backslashreplace")


def encode_status(event: dict[str, Any], limit: int, *, cut: bool = False) -> tuple[bytes, bool]:
    """The status event as JSON bytes of at most ``limit``, and whether it had to be cut down.

    Never raises. An event that cannot be encoded (a value JSON cannot hold, nesting deeper than the
    stack) or is too large is cut down: the metadata echo is dropped, the error message shortened;
    task_id, status and error code stay. ``cut`` forces that, for a broker that refused the full one.
    """
    if not cut:
        try:
            value = json.dumps(event, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
            value = b""
        if value and len(value) <= limit:
            return value, False
    value = json.dumps(cut_down(event), ensure_ascii=False).encode("utf-8")
    if len(value) > limit:  # only under a tiny KAFKA_MAX_REQUEST_BYTES with long ids and messages
        value = json.dumps(cut_down(event, chars=MIN_CUT_TEXT_CHARS), ensure_ascii=False).encode("utf-8")
    return value, True


def cut_down(event: dict[str, Any], *, chars: int = CUT_TEXT_CHARS) -> dict[str, Any]:
    """The smallest event still worth sending: same fields, no metadata, a short error message."""
    small = {name: _short(event.get(name), chars) for name in _SMALL_FIELDS}
    small["task_id"] = _short(event.get("task_id"), CUT_TEXT_CHARS)  # the one string never cut short
    error = event.get("error")
    if isinstance(error, dict):
        small["error"] = {
            "code": _short(error.get("code"), chars),
            "message": _short(error.get("message"), chars),
        }
    result = event.get("result")
    if isinstance(result, dict):
        small["result"] = {str(_short(k, chars)): _short(v, chars) for k, v in result.items()}
    small["metadata"] = None
    return small


_SMALL_FIELDS = (
    "task_id",
    "status",
    "status_name",
    "worker_id",
    "attempt",
    "ts",
    "tokens_used",
    "processing_ms",
)


def _short(value: Any, chars: int) -> Any:
    """A value safe for json.dumps: short UTF-8-safe text, a finite number, or None."""
    if isinstance(value, str):
        return utf8(value[:chars]).decode("utf-8")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and abs(value) < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def dlq_headers(
    *, error: TaskError, source: Source, worker_id: str, task_id: str | None
) -> list[tuple[str, bytes]]:
    headers = [
        ("error_code", utf8(error.code)),
        ("error_message", utf8(str(error))[:1024]),
        ("source_topic", utf8(source.topic)),
        ("source_partition", str(source.partition).encode()),
        ("source_offset", str(source.offset).encode()),
        ("worker_id", utf8(worker_id)),
    ]
    if task_id is not None:
        headers.append(("task_id", utf8(task_id)))
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
        self._max_status_bytes = self._max_dlq_bytes
        self._on_error = on_error

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def status(self, event: dict[str, Any], *, cut: bool = False) -> Delivery:
        """Queue one status event (built by :func:`status_event`); the log line follows the broker's ack.

        Encoding never raises: an event that cannot be encoded or is too large goes out cut down
        (:func:`encode_status`); ``cut`` asks for that after the broker refused the full event.
        """
        task_id, code = event["task_id"], event["status"]
        value, was_cut = encode_status(event, self._max_status_bytes, cut=cut)
        if was_cut:
            log.warning("Status %d of task %s cut down to fit: metadata echo dropped", code, task_id)
        delivery = self._producer.send(self._status_topic, value=value, key=utf8(task_id))
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
        record_key = utf8(task_id) if task_id is not None else key
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
