"""One task as a hand-written loop does it: read the input from S3, call the model, write the result,
publish RECEIVED / PROCESSING / COMPLETED (or FAILED) status events in the service's format, so the
benchmark measures every system from the same events.

Configured by the service's own environment variables (KAFKA_*, MINIO_*, GIGACHAT_*), read directly.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3
from kafka import KafkaProducer
from minio import Minio
from requests.adapters import HTTPAdapter


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TaskHandler:
    """Shared by the loop's threads: one producer, one S3 client and one HTTP session, each thread-safe."""

    def __init__(self, *, threads: int) -> None:
        env = os.environ
        self.worker_id = f"{socket.gethostname()}:peer:{os.getpid()}"
        self.status_topic = env["KAFKA_STATUS_TOPIC"]
        self.output_bucket = env.get("MINIO_OUTPUT_BUCKET", "llm-output")
        self.output_prefix = env.get("MINIO_OUTPUT_PREFIX", "results/")
        self.api = env["GIGACHAT_API_URL"].rstrip("/")
        self.producer = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], linger_ms=5)
        pool = urllib3.PoolManager(maxsize=threads, retries=False, timeout=30)
        self.s3 = Minio(
            env["MINIO_ENDPOINT"],
            access_key=env["MINIO_ACCESS_KEY"],
            secret_key=env["MINIO_SECRET_KEY"],
            secure=env.get("MINIO_SECURE", "false") == "true",
            http_client=pool,
        )
        self.http = requests.Session()
        self.http.mount("http://", HTTPAdapter(pool_maxsize=threads))
        self.http.mount("https://", HTTPAdapter(pool_maxsize=threads))
        self.token = self._token(env["GIGACHAT_AUTH_URL"], env["GIGACHAT_AUTH_KEY"])

    def _token(self, url: str, key: str) -> str:
        headers = {"Authorization": f"Basic {key}", "RqUID": str(uuid.uuid4())}
        reply = self.http.post(url, headers=headers, data={"scope": "GIGACHAT_API_PERS"}, timeout=30)
        reply.raise_for_status()
        token: str = reply.json()["access_token"]
        return token

    def handle(self, value: bytes) -> None:
        """Never raises: a failed task gets a FAILED status (and is not retried)."""
        task = json.loads(value)
        started = time.monotonic()
        self._status(task, 1, "RECEIVED")
        try:
            result = self._work(task)
        except Exception as exc:  # the loop must go on; the hand-written loop just reports it
            error = {"code": "PEER_ERROR", "message": str(exc)[:200]}
            self._status(task, 4, "FAILED", error=error)
            print(f"task {task.get('task_id')} failed: {exc}", file=sys.stderr, flush=True)
            return
        ms = round((time.monotonic() - started) * 1000, 1)
        self._status(task, 3, "COMPLETED", processing_ms=ms, result=result)

    def _work(self, task: dict[str, Any]) -> dict[str, str]:
        ref = task["input"]
        reply = self.s3.get_object(ref["bucket"], ref["key"])
        try:
            text = reply.read().decode()
        finally:
            reply.close()
            reply.release_conn()
        self._status(task, 2, "PROCESSING")
        answer = self.http.post(
            f"{self.api}/chat/completions",
            headers={"Authorization": f"Bearer {self.token}"},
            json={
                "model": "GigaChat",
                "messages": [{"role": "user", "content": f"{task['prompt']}\n\n{text}"}],
            },
            timeout=60,
        )
        answer.raise_for_status()
        body = answer.json()
        key = f"{self.output_prefix}{task['task_id']}.json"
        out = json.dumps({"task_id": task["task_id"], "content": body["choices"][0]["message"]["content"]})
        data = out.encode()
        self.s3.put_object(
            self.output_bucket, key, io.BytesIO(data), len(data), content_type="application/json"
        )
        return {"bucket": self.output_bucket, "key": key}

    def _status(self, task: dict[str, Any], code: int, name: str, **fields: Any) -> None:
        event = {
            "task_id": task.get("task_id"),
            "status": code,
            "status_name": name,
            "worker_id": self.worker_id,
            "attempt": 1,
            "ts": _now(),
            **fields,
        }
        self.producer.send(
            self.status_topic, key=str(task.get("task_id")).encode(), value=json.dumps(event).encode()
        )

    def close(self) -> None:
        self.producer.flush(timeout=30)
        self.producer.close(timeout=10)
