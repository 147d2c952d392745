"""The worker tests' testbed on the real stack. Every worker started is stopped in teardown (SIGTERM to
its process group, SIGKILL after a timeout); readers are closed; the emulator's configuration is restored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devstack.stack import Stack
from tests.worker.harness import (
    EmulatorControl,
    Names,
    StatusLog,
    TopicReader,
    WorkerProcess,
    create_topics,
    worker_env,
)


class Testbed:
    """One test's private topics, group and result prefix, with clients and worker processes for it."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, *, stack: Stack, base_name: str, service_env: dict[str, str], tmp_path: Path) -> None:
        self.stack = stack
        self._base_name = base_name
        self._service_env = service_env
        self._tmp_path = tmp_path
        self._names: Names | None = None
        self._workers: list[WorkerProcess] = []
        self._readers: list[TopicReader] = []
        self._producer: KafkaProducer | None = None
        self._emulator: EmulatorControl | None = None
        self.s3 = stack.s3.client()

    def create(self, *, partitions: int = 4) -> Names:
        """Create this test's topics (on first use of ``names`` unless called earlier)."""
        self._names = Names.fresh(self._base_name)
        create_topics(self.stack, self._names, partitions=partitions)
        return self._names

    @property
    def names(self) -> Names:
        return self._names or self.create()

    def env(self, **overrides: str) -> dict[str, str]:
        return worker_env(self._service_env, self.names, self._tmp_path, **overrides)

    def start_worker(
        self, env: dict[str, str], *, slot: int | None = None, name: str = "worker"
    ) -> WorkerProcess:
        worker = WorkerProcess(
            env=env, log_path=self._tmp_path / f"{name}-{len(self._workers)}.log", slot=slot
        )
        self._workers.append(worker)
        return worker

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.stack.kafka_bootstrap, linger_ms=5, max_request_size=2 * 1024 * 1024
            )
        return self._producer

    def status_log(self) -> StatusLog:
        reader = StatusLog(self.stack.kafka_bootstrap, self.names.status)
        self._readers.append(reader)
        return reader

    def dlq_log(self) -> TopicReader:
        reader = TopicReader(self.stack.kafka_bootstrap, self.names.dlq)
        self._readers.append(reader)
        return reader

    @property
    def emulator(self) -> EmulatorControl:
        if self._emulator is None:
            self._emulator = EmulatorControl(self.stack.emulator_url)
        return self._emulator

    def close(self) -> None:
        for worker in self._workers:
            worker.stop(timeout=30)
        for reader in self._readers:
            reader.close()
        if self._producer is not None:
            self._producer.close(timeout=10)
        if self._emulator is not None:
            self._emulator.restore()


@pytest.fixture
def bed(stack: Stack, unique_name: str, service_env: dict[str, str], tmp_path: Path) -> Iterator[Testbed]:
    testbed = Testbed(stack=stack, base_name=unique_name, service_env=service_env, tmp_path=tmp_path)
    try:
        yield testbed
    finally:
        testbed.close()
