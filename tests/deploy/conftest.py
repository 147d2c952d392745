"""Fixtures of the deployment tests: podman with its own containers.conf, the image, the stack's names."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devstack.stack import Stack
from tests.deploy.podman import build_image, ensure_base_image, podman_env
from tests.external_tools import require_tool
from tests.worker.harness import EmulatorControl, Names, StatusLog, create_topics

REPO = Path(__file__).resolve().parents[2]
IMAGE_TAG = "localhost/llm-service:test"


@pytest.fixture(scope="session")
def podman_environ(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    require_tool("podman", hint="apt-get install podman runc")
    require_tool("runc", hint="apt-get install runc")
    return podman_env(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def image(podman_environ: dict[str, str]) -> str:
    """The service's image built on a debootstrap Debian bookworm base (both cached between runs)."""
    require_tool("debootstrap", hint="apt-get install debootstrap")
    if os.geteuid() != 0:
        pytest.skip("debootstrap and podman's host network need root (CI runs as root)")
    base = ensure_base_image(podman_environ)
    return build_image(podman_environ, context=REPO, tag=IMAGE_TAG, base=base)


@pytest.fixture
def names(stack: Stack, unique_name: str) -> Names:
    created = Names.fresh(unique_name)
    create_topics(stack, created, partitions=2)
    return created


@pytest.fixture
def producer(stack: Stack) -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    yield client
    client.close(timeout=10)


@pytest.fixture
def status_log(stack: Stack, names: Names) -> Iterator[StatusLog]:
    reader = StatusLog(stack.kafka_bootstrap, names.status)
    yield reader
    reader.close()


@pytest.fixture
def emulator(stack: Stack) -> Iterator[EmulatorControl]:
    control = EmulatorControl(stack.emulator_url)
    yield control
    control.restore()
