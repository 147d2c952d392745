"""Fixtures for the supervisor's tests on the real stack: the session ``stack`` and the worker's harness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from devstack.stack import Stack
from llm_service.status_table import StatusTable
from tests.supervisor.harness import Supervisor
from tests.worker.harness import Names, create_topics, task_bytes, worker_env

StartSupervisor = Callable[..., Supervisor]
SendTasks = Callable[..., list[str]]


@pytest.fixture
def names(stack: Stack, unique_name: str) -> Names:
    created = Names.fresh(unique_name)
    create_topics(stack, created, partitions=4)
    return created


@pytest.fixture
def send_tasks(producer: KafkaProducer, names: Names) -> SendTasks:
    """``send_tasks(prefix, n, *, key="", **fields)`` sends tasks ``{prefix}-0`` .. ``{prefix}-{n-1}``
    (prompt ``say <id>`` unless ``fields`` give one) to the test's tasks topic, flushed; returns
    their ids. Each is keyed by its id, or all by ``key`` (one partition)."""

    def send_n(prefix: str, n: int, *, key: str = "", **fields: Any) -> list[str]:
        ids = [f"{prefix}-{i}" for i in range(n)]
        for task_id in ids:
            value = task_bytes(task_id, **{"prompt": f"say {task_id}", **fields})
            producer.send(names.tasks, key=(key or task_id).encode(), value=value)
        producer.flush(timeout=30)
        return ids

    return send_n


@pytest.fixture
def table() -> Iterator[StatusTable]:
    """A four-slot status table in shared memory for the pool's tests, closed after the test."""
    created = StatusTable.create(4)
    yield created
    created.close()


@pytest.fixture
def start_real(service_env: dict[str, str], names: Names, tmp_path: Path) -> Iterator[StartSupervisor]:
    """Start ``llm-supervisor`` with the real worker against the stack; TERM then KILL in teardown."""
    started: list[Supervisor] = []

    def start(env_file: Path | None = None, env_text: str | None = None, **overrides: str) -> Supervisor:
        env = worker_env(
            service_env,
            names,
            tmp_path,
            KAFKA_SESSION_TIMEOUT_MS="10000",
            WORKER_PROCESSES="2",
            WORKER_MAX_CONCURRENT_TASKS="4",
            WORKER_HEARTBEAT_TIMEOUT="30",
            SUPERVISOR_STOP_MARGIN_S="5",
            LIMIT_DISK_FREE_MB="1",
            # The test machine's own load must not shed load (pause intake) under these tests.
            **{f"{kind}_{what}_PERCENT": "100" for kind in ("LIMIT", "ALERT") for what in ("CPU", "RAM")},
        )
        env.update(overrides)
        sup = Supervisor(
            env=env,
            tmp_path=tmp_path,
            fake=False,
            env_file=env_file,
            env_text=env_text,
            name=f"real{len(started)}",
        )
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.stop(timeout=60)
