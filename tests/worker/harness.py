"""Helpers for the worker's tests on the real stack: worker processes, topics, status events, emulator.

Nothing here sleeps to synchronise: every wait polls a condition until a deadline and fails with
what it saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from devstack.s3 import S3Server
from devstack.stack import Stack
from tests.waiting import wait_until

FINAL = (3, 4)


@dataclass(frozen=True)
class Names:
    """Topics, group and result prefix private to one test."""

    tasks: str
    status: str
    dlq: str
    group: str
    prefix: str

    @classmethod
    def fresh(cls, base: str) -> Names:
        return cls(f"{base}-tasks", f"{base}-status", f"{base}-dlq", f"{base}-group", f"{base}/")

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_TASKS_TOPIC": self.tasks,
            "KAFKA_STATUS_TOPIC": self.status,
            "KAFKA_DLQ_TOPIC": self.dlq,
            "KAFKA_GROUP_ID": self.group,
            "MINIO_OUTPUT_PREFIX": self.prefix,
        }


def hold_for(condition: Callable[[], Any], *, seconds: float, what: str, step: float = 0.2) -> None:
    """Check that ``condition`` stays true for ``seconds`` (observing a state, not synchronising)."""
    until = time.monotonic() + seconds
    while True:
        assert condition(), f"{what} stopped holding"
        if time.monotonic() >= until:
            return
        time.sleep(step)


class WorkerProcess:
    """One ``python -m llm_worker`` in its own process group, its log in a file."""

    def __init__(self, *, env: dict[str, str], log_path: Path, slot: int | None = None) -> None:
        self.log_path = log_path
        argv = [sys.executable, "-m", "llm_worker"]
        if slot is not None:
            argv += ["--slot", str(slot)]
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, *, timeout: float = 60.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and self.log_text().count(text) < count:
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}) before logging {text!r}:\n"
                    + self.log_text()[-3000:]
                )
            return self.log_text().count(text) >= count

        wait_until(seen, timeout=timeout, what=f"{count}x {text!r} in {self.log_path.name}")

    def started(self, timeout: float = 60.0) -> WorkerProcess:
        self.wait_for_log("Worker started, listening to Kafka topic", timeout=timeout)
        self.wait_for_log("Partitions assigned", timeout=timeout)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


class TopicReader:
    """Reads a whole topic from the beginning (no group), keeping every record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        partitions = wait_until(
            lambda: self._consumer.partitions_for_topic(topic), timeout=30, what=f"topic {topic}"
        )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)
        self.records: list[Any] = []

    def read(self, seconds: float = 0.2) -> list[Any]:
        batches = self._consumer.poll(timeout_ms=int(seconds * 1000))
        for batch in batches.values():
            self.records.extend(batch)
        return self.records

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class StatusLog(TopicReader):
    """The status topic, decoded; answers "which tasks have a final status"."""

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in self.records]

    def finals(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in self.events():
            if event["status"] in FINAL:
                found[event["task_id"]].append(event)
        return found

    def wait_finals(self, task_ids: Iterable[str], *, timeout: float) -> dict[str, list[dict[str, Any]]]:
        wanted = set(task_ids)

        def done() -> bool:
            self.read()
            return wanted <= self.finals().keys()

        try:
            wait_until(done, timeout=timeout, what=f"final statuses of {len(wanted)} tasks", step=0)
        except AssertionError:
            missing = sorted(wanted - self.finals().keys())
            raise AssertionError(f"{len(missing)} tasks without a final status, e.g. {missing[:5]}") from None
        return {t: v for t, v in self.finals().items() if t in wanted}


def send(producer: KafkaProducer, topic: str, value: bytes, key: bytes | None = None) -> None:
    producer.send(topic, value=value, key=key).get(timeout=30)


def task_bytes(task_id: str, **fields: Any) -> bytes:
    return json.dumps({"task_id": task_id, **fields}, ensure_ascii=False).encode()


class EmulatorControl:
    """The emulator's control API; restores the configuration it found when closed."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._saved = requests.get(f"{self.url}/_emulator/config", timeout=10).json()
        self._models_out: set[str] = set()

    def config(self, **changes: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}/_emulator/config", json=changes, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def outage(self, seconds: float) -> None:
        requests.post(
            f"{self.url}/_emulator/outage", json={"seconds": seconds}, timeout=10
        ).raise_for_status()

    def calls_per_task(self) -> dict[str, int]:
        """Chat calls the emulator received per task id (X-Request-ID), failed ones included."""
        body = requests.get(f"{self.url}/_emulator/calls", timeout=30).json()
        counts: dict[str, int] = body["per_request_id"]
        return counts

    def model_outage(self, model: str, seconds: float) -> None:
        """An outage of one model only (gigachat_emulator/per_model.py); 0 ends it."""
        self._models_out.add(model)
        requests.post(
            f"{self.url}/_emulator/outage", json={"seconds": seconds, "model": model}, timeout=10
        ).raise_for_status()

    def calls(self, request_id: str) -> list[dict[str, Any]]:
        """The emulator's log of the calls made with this X-Request-ID (a task's id)."""
        body = requests.get(
            f"{self.url}/_emulator/calls", params={"request_id": request_id}, timeout=30
        ).json()
        calls: list[dict[str, Any]] = body["calls"]
        return calls

    def ok_calls_per_task(self) -> dict[str, int]:
        body = requests.get(f"{self.url}/_emulator/calls", timeout=30).json()
        counts: dict[str, int] = body["per_request_id_ok"]
        return counts

    def restore(self) -> None:
        requests.post(f"{self.url}/_emulator/outage", json={"seconds": 0}, timeout=10)
        for model in self._models_out:
            requests.post(f"{self.url}/_emulator/outage", json={"seconds": 0, "model": model}, timeout=10)
        requests.post(f"{self.url}/_emulator/config", json=self._saved, timeout=10).raise_for_status()


def run_llmctl(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m llmctl ARGS`` with ``env``, its output as text; the caller judges the exit code."""
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def worker_env(base: dict[str, str], names: Names, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a test worker: the stack, the test's own names, quick timeouts."""
    env = dict(base)
    env.update(names.env())
    env.update(
        {
            "GIGACHAT_LIMITER_DIR": str(tmp_path / "limiter"),
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "WORKER_DRAIN_TIMEOUT": "30",
            "WORKER_REVOKE_TIMEOUT_S": "5",
            "TASK_RETRY_BACKOFF_S": "0.2",
            "TASK_RETRY_BACKOFF_MAX_S": "2",
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


def create_topics(
    stack: Stack, names: Names, *, partitions: int = 4, dlq_config: dict[str, str] | None = None
) -> None:
    stack.create_topic(names.tasks, partitions, config={"max.message.bytes": str(2 * 1024 * 1024)})
    stack.create_topic(names.status, 3)
    stack.create_topic(names.dlq, 3, config=dlq_config or {"max.message.bytes": str(2 * 1024 * 1024)})


@contextlib.contextmanager
def private_s3(server: S3Server) -> Iterator[S3Server]:
    """A test's own S3 server (TLS, an access log...) with the service's two buckets; stopped after."""
    try:
        server.start()
        server.create_buckets("llm-input", "llm-output")
        yield server
    finally:
        server.stop()
