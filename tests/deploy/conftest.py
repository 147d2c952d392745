"""Fixtures of the deployment tests: podman with its own containers.conf, the image, the stack's names."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.stack import Stack
from tests.deploy.podman import build_image, ensure_base_image, podman_env
from tests.external_tools import require_tool
from tests.supervisor.harness import Supervisor
from tests.worker.harness import Names, create_topics

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
def lone_supervisor(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    """Starts one supervisor of one fake worker, none of the outer service settings, its runtime
    directory in ``tmp_path``; ``start(**env)`` adds settings. Stopped at the end of the test."""
    started: list[Supervisor] = []

    def start(**extra: str) -> Supervisor:
        outer = ("KAFKA_", "MINIO_", "GIGACHAT_", "WORKER_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(outer) and k != "NOTIFY_SOCKET"}
        env.update(WORKER_PROCESSES="1", LIMIT_DISK_FREE_MB="1", RUNTIME_DIRECTORY=str(tmp_path), **extra)
        sup = Supervisor(env=env, tmp_path=tmp_path)
        started.append(sup)
        sup.running(1)
        return sup

    yield start
    for sup in started:
        sup.stop()


@pytest.fixture
def names(stack: Stack, unique_name: str) -> Names:
    created = Names.fresh(unique_name)
    create_topics(stack, created, partitions=2)
    return created
