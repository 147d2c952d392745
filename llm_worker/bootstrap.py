"""Start-up of a worker process: create every client and check that Kafka, S3 and GigaChat answer.

Runs in the worker process (after the fork), on its main thread, before the consumer loop. Each
attempt builds all clients from scratch; a failed attempt closes what it built, logs
``Bootstrap failed: {error}``, counts ``bootstrap_failures`` in the status table and waits with
exponential backoff (interruptible by a stop request). A failure that no retry can fix (a rejected
GigaChat key, a malformed client setting) logs ``Failed to initialize interface: {error}`` and gives
up at once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaConfigurationError, KafkaError

from llm_service import exit_codes, log_lines
from llm_service.backoff import compute_backoff
from llm_service.clients import kafka_failure_hint, kafka_options
from llm_service.config import Settings
from llm_service.errors import ConfigError, PermanentTaskError, TaskError
from llm_service.status_table import Breaker, Conn, SlotWriter
from llm_worker.consumer_loop import StopFlags
from llm_worker.events import make_producer
from llm_worker.gigachat import BreakerSet, ConcurrencyLimiter, GigaChatClient
from llm_worker.storage import Storage, make_client

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 30.0
KAFKA_BOOTSTRAP_TIMEOUT_MS = 10_000
CLOSE_TIMEOUT_S = 5.0
CLOSE_COMMIT_TIMEOUT_MS = 10_000  # the consumer's close: long enough for a last commit to be answered


@dataclass
class Clients:
    """Everything a worker talks to, created in the worker process. Closed once, by run_worker."""

    consumer: KafkaConsumer
    producer: KafkaProducer
    storage: Storage
    limiter: ConcurrencyLimiter
    breakers: BreakerSet
    gigachat: GigaChatClient

    def close(self) -> None:
        """Flush the producer, close the consumer (a static member stays in the group), close the pools.

        Never raises. Leaving the group for good is membership.leave_group, on a retired slot only.
        """
        for name, close in (
            ("producer", lambda: self.producer.close(timeout=CLOSE_TIMEOUT_S)),
            ("consumer", lambda: self.consumer.close(autocommit=False, timeout_ms=CLOSE_COMMIT_TIMEOUT_MS)),
            ("gigachat", self.gigachat.close),
            ("limiter", self.limiter.close),
        ):
            try:
                close()
            except Exception as exc:  # closing is best effort: the process exits right after
                log.warning("Closing the %s failed: %s", name, exc)


class _Partial:
    """Clients built so far in one attempt, closed again if the attempt fails."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], None]] = []

    def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()


def bootstrap(
    *,
    settings: Settings,
    progress: SlotWriter,
    stop: StopFlags,
    worker_id: str,
    group_instance_id: str | None,
) -> Clients | int:
    """Connect with retries; returns the clients, or the exit code to return (BOOT_FAILED, or OK on stop)."""
    attempts = settings.worker_bootstrap_attempts
    for attempt in range(1, attempts + 1):
        if stop.graceful or stop.fast:
            return exit_codes.OK
        progress.heartbeat()
        try:
            clients = _connect(settings, progress, worker_id, group_instance_id)
        except (KafkaConfigurationError, ValueError, ConfigError) as exc:
            log.error(log_lines.INIT_FAILED, exc)
            return exit_codes.BOOT_FAILED
        except PermanentTaskError as exc:
            if exc.code.startswith(("AUTH_", "MODEL_")):
                log.error(log_lines.INIT_FAILED, f"GigaChat: {exc}")
                return exit_codes.BOOT_FAILED
            _failed(progress, attempt, attempts, exc)
        except (KafkaError, TaskError, OSError) as exc:
            _failed(progress, attempt, attempts, exc, hint=kafka_failure_hint(settings, exc))
        else:
            progress.update(bootstrap_failures=0)
            return clients
        if attempt < attempts:
            pause = compute_backoff(attempt, base_s=settings.worker_bootstrap_backoff_s, max_s=BACKOFF_MAX_S)
            _wait(pause, progress, stop)
    log.error("Giving up after %d bootstrap attempts", attempts)
    return exit_codes.BOOT_FAILED


def _failed(progress: SlotWriter, attempt: int, attempts: int, exc: BaseException, *, hint: str = "") -> None:
    why = f"{type(exc).__name__}: {exc}{f' ({hint})' if hint else ''}"
    log.error(log_lines.BOOTSTRAP_FAILED, f"{why} (attempt {attempt} of {attempts})")
    progress.add(bootstrap_failures=1)


def _wait(seconds: float, progress: SlotWriter, stop: StopFlags) -> None:
    """Sleep in short steps, heartbeating, until ``seconds`` pass or a stop is requested."""
    until = time.monotonic() + seconds
    while time.monotonic() < until and not (stop.graceful or stop.fast):
        progress.heartbeat()
        time.sleep(min(0.2, max(0.0, until - time.monotonic())))


def _connect(
    settings: Settings, progress: SlotWriter, worker_id: str, group_instance_id: str | None
) -> Clients:
    partial = _Partial()
    try:
        consumer = make_consumer(settings, client_id=worker_id, group_instance_id=group_instance_id)
        partial.closers.append(lambda: consumer.close(autocommit=False, timeout_ms=1000))
        _check_topics(consumer, settings)
        producer = make_producer(settings, client_id=f"{worker_id}-events")
        partial.closers.append(lambda: producer.close(timeout=1))
        progress.update(conn_kafka=Conn.UP)
        storage = _storage(settings, progress)
        gigachat, limiter, breaker = _gigachat(settings, progress, partial)
    except BaseException:
        partial.close()
        raise
    return Clients(consumer, producer, storage, limiter, breaker, gigachat)


def make_consumer(settings: Settings, *, client_id: str, group_instance_id: str | None) -> KafkaConsumer:
    """The task consumer: manual commits, earliest reset, cooperative-sticky, optional static membership."""
    session_ms = settings.kafka_session_timeout_ms
    return KafkaConsumer(
        **kafka_options(settings),
        client_id=re.sub(r"[^A-Za-z0-9._-]", "_", client_id),
        group_id=settings.kafka_group_id,
        group_instance_id=group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        partition_assignment_strategy=[CooperativeStickyAssignor],
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(100, session_ms // 3),
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        max_poll_records=settings.worker_max_concurrent_tasks,
        bootstrap_timeout_ms=KAFKA_BOOTSTRAP_TIMEOUT_MS,
        metrics_enabled=False,  # never read; its sensors cost CPU on every fetch and record
    )


def _check_topics(consumer: KafkaConsumer, settings: Settings) -> None:
    existing = consumer.topics()
    wanted = (settings.kafka_tasks_topic, settings.kafka_status_topic, settings.kafka_dlq_topic)
    missing = [t for t in wanted if t not in existing]
    if missing:
        raise KafkaError(f"topics do not exist: {', '.join(missing)}")


def _storage(settings: Settings, progress: SlotWriter) -> Storage:
    def health(up: bool) -> None:
        progress.update(conn_s3=Conn.UP if up else Conn.DOWN)

    client = make_client(settings, pool_size=settings.worker_max_concurrent_tasks + 2)
    storage = Storage(client=client, max_input_bytes=settings.input_max_bytes, on_health=health)
    storage.check([settings.minio_output_bucket, *sorted(settings.allowed_input_buckets())])
    return storage


def _gigachat(
    settings: Settings, progress: SlotWriter, partial: _Partial
) -> tuple[GigaChatClient, ConcurrencyLimiter, BreakerSet]:
    limiter = ConcurrencyLimiter.from_settings(settings)
    partial.closers.append(limiter.close)
    breakers = BreakerSet.from_settings(settings)
    client = GigaChatClient(settings=settings, limiter=limiter, breakers=breakers)
    partial.closers.append(client.close)
    try:
        client.check()
    except TaskError:
        progress.update(conn_gigachat=Conn.DOWN)
        raise
    progress.update(conn_gigachat=Conn.UP, breaker=Breaker.CLOSED)
    return client, limiter, breakers
