"""Session fixtures shared by the whole suite.

``stack`` is a private instance of the local stack (real Kafka broker, real S3 server, the GigaChat
emulator) on free ports in a temporary folder, started once per test session and always stopped.
A component that cannot start fails the tests that use it; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devstack.paths import cache_dir
from devstack.stack import Stack, StackPorts
from tests.worker.harness import EmulatorControl, Names, StatusLog


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("stack")
    test_stack = Stack(cache=cache_dir(), state_dir=state_dir, ports=StackPorts.free())
    try:
        test_stack.up()
        yield test_stack
    finally:
        test_stack.down()


@pytest.fixture
def unique_name() -> str:
    """A fresh name for a topic, group or key prefix, so tests sharing the stack do not meet."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def service_env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """A process environment for running the service's commands against the test stack."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MINIO_", "GIGACHAT_", "WORKER_"))
    }
    env.update(stack.env())
    env["RUNTIME_DIRECTORY"] = str(tmp_path)
    return env


@pytest.fixture
def producer(stack: Stack) -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    yield client
    client.close(timeout=10)


@pytest.fixture
def status_log(stack: Stack, names: Names) -> Iterator[StatusLog]:
    """The status topic of the test's ``names``, which each test folder's conftest creates."""
    reader = StatusLog(stack.kafka_bootstrap, names.status)
    yield reader
    reader.close()


@pytest.fixture
def emulator(stack: Stack) -> Iterator[EmulatorControl]:
    control = EmulatorControl(stack.emulator_url)
    yield control
    control.restore()
