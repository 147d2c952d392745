"""Fixtures of the deployment tests: podman with its own containers.conf, the image, the stack's names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.stack import Stack
from tests.deploy.podman import build_image, ensure_base_image, podman_env
from tests.external_tools import require_tool
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
def names(stack: Stack, unique_name: str) -> Names:
    created = Names.fresh(unique_name)
    create_topics(stack, created, partitions=2)
    return created
