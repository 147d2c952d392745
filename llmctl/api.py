"""The Python submission API: upload inputs, send tasks, wait for their final status, read results.

For services that submit tasks::

    from llm_service.config import load_settings
    from llmctl.api import TaskClient

    with TaskClient(settings=load_settings()) as client:
        ref = client.upload_file(Path("report.txt"), task_id="report-1")
        task_id = client.submit(task_id="report-1", prompt="Summarise the document", input=ref)
        final = client.wait(task_id, timeout=300)
        if final.ok:
            print(client.result(final)["content"])

A TaskClient starts following the status topic when it sends its first task, so a status published
a millisecond later is not missed. One TaskClient per thread; its clients are created on first use.
"""

from __future__ import annotations

import io
import json
import mimetypes
import re
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from minio import Minio
from minio.error import S3Error

from llm_service.clients import kafka_options, minio_client
from llm_service.config import Settings
from llmctl.watch import FinalStatus, StatusWatcher

SEND_TIMEOUT_S = 30.0
DEFAULT_LOOKBACK_S = 24 * 3600.0


def new_task_id(hint: str = "task") -> str:
    """A fresh task id: the hint reduced to the allowed characters, plus 12 random hex digits."""
    stem = re.sub(r"[^A-Za-z0-9._:-]+", "-", hint).strip("-.")[:100] or "task"
    return f"{stem}-{uuid.uuid4().hex[:12]}"


def task_message(
    *,
    task_id: str,
    prompt: str | None = None,
    messages: list[dict[str, str]] | None = None,
    input: dict[str, str] | None = None,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    output: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The task message of docs/reference.md, with the fields left out that were not given."""
    fields = {
        "task_id": task_id,
        "prompt": prompt,
        "messages": messages,
        "input": input,
        "model": model,
        "params": params,
        "output": output,
        "metadata": metadata,
    }
    return {name: value for name, value in fields.items() if value is not None}


class TaskClient:
    """Submits tasks to ``KAFKA_TASKS_TOPIC`` and follows ``KAFKA_STATUS_TOPIC``."""

    def __init__(self, *, settings: Settings) -> None:
        self._settings = settings
        self._producer: KafkaProducer | None = None
        self._s3: Minio | None = None
        self._watcher: StatusWatcher | None = None

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- inputs and results in S3 ------------------------------------------------------------------

    def upload(
        self, data: bytes, *, key: str, bucket: str | None = None, content_type: str | None = None
    ) -> dict[str, str]:
        """Store an input object; returns the task's ``input`` reference."""
        bucket = bucket or self._settings.minio_input_bucket
        kind = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
        self._minio().put_object(bucket, key, io.BytesIO(data), len(data), content_type=kind)
        return {"bucket": bucket, "key": key}

    def upload_file(self, path: Path, *, task_id: str) -> dict[str, str]:
        """Upload a file as ``uploads/<task_id>/<file name>`` in MINIO_INPUT_BUCKET."""
        return self.upload(path.read_bytes(), key=f"uploads/{task_id}/{path.name}")

    def result(self, final: FinalStatus) -> dict[str, Any] | None:
        """The result object of a COMPLETED task; None when it is not (or no longer) there."""
        ref = final.result
        if ref is None:
            return None
        try:
            response = self._minio().get_object(ref["bucket"], ref["key"])
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        try:
            body = json.loads(response.read())
        finally:
            response.close()
            response.release_conn()
        return body if isinstance(body, dict) else None

    # --- tasks -------------------------------------------------------------------------------------

    def submit(self, *, task_id: str | None = None, **fields: Any) -> str:
        """Send one task (fields as in :func:`task_message`); returns its id once Kafka has it."""
        task_id = task_id or new_task_id()
        message = task_message(task_id=task_id, **fields)
        self._watch()
        value = json.dumps(message, ensure_ascii=False).encode("utf-8")
        self._kafka().send(self._settings.kafka_tasks_topic, key=task_id.encode(), value=value).get(
            timeout=SEND_TIMEOUT_S
        )
        return task_id

    def wait(self, task_id: str, *, timeout: float, since_s: float = DEFAULT_LOOKBACK_S) -> FinalStatus:
        """The final status of one task; raises TimeoutError when none arrives within ``timeout`` s.

        A task this client sent is followed from the moment it was sent; any other task from
        ``since_s`` seconds ago.
        """
        finals = self.wait_all([task_id], timeout=timeout, since_s=since_s)
        if task_id not in finals:
            raise TimeoutError(f"no final status for task {task_id} within {timeout:g}s")
        return finals[task_id]

    def wait_all(
        self,
        task_ids: Iterable[str],
        *,
        timeout: float,
        on_final: Callable[[FinalStatus], None] | None = None,
        since_s: float = DEFAULT_LOOKBACK_S,
    ) -> dict[str, FinalStatus]:
        """Final statuses of the tasks that reach one within ``timeout``; ``on_final`` sees each one."""
        ids = list(task_ids)
        if self._watcher is None:
            since_ms = int((time.time() - since_s) * 1000)
            self._watcher = StatusWatcher.start(self._settings, since_ms=since_ms, task_ids=ids)
        return self._watcher.wait(ids, timeout=timeout, on_final=on_final)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=SEND_TIMEOUT_S)
            self._producer = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    # --- clients, created on first use -----------------------------------------------------------

    def _watch(self) -> None:
        if self._watcher is None:
            self._watcher = StatusWatcher.start(self._settings)

    def _kafka(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **kafka_options(self._settings),
                client_id="llmctl",
                max_request_size=self._settings.kafka_max_request_bytes,
                linger_ms=5,
            )
        return self._producer

    def _minio(self) -> Minio:
        if self._s3 is None:
            self._s3 = minio_client(self._settings)
        return self._s3
