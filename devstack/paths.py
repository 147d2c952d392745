"""Where the stack keeps what it downloads, builds and runs. Nothing here lives in the repository."""

from __future__ import annotations

import os
from pathlib import Path

KAFKA_VERSION = "4.3.1"
VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.7.0"


def cache_dir() -> Path:
    """``$LLM_SERVICE_CACHE``, else ``$XDG_CACHE_HOME/llm-service``, else ``~/.cache/llm-service``."""
    explicit = os.environ.get("LLM_SERVICE_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "llm-service"


def default_state_dir() -> Path:
    """Where ``llm-devstack up`` keeps the running stack's data, logs and pid files."""
    return cache_dir() / "stack"


def kafka_home(cache: Path) -> Path:
    return cache / f"kafka-{KAFKA_VERSION}"


def versitygw_binary(cache: Path) -> Path:
    return cache / "bin" / f"versitygw-{VERSITYGW_VERSION}"
