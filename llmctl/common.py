"""What every ``llmctl`` command shares: ``--env-file``, loading the settings, finding the socket."""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

from llm_service.config import Settings, load_settings
from llm_service.errors import ConfigError

CONFIG_ERROR = 2

# Where the systemd unit's supervisor listens (RuntimeDirectory=llm-service in
# deploy/systemd/llm-service.service). An operator's shell has no RUNTIME_DIRECTORY, so without this
# llmctl would look for the /tmp default and miss the service.
SYSTEMD_SOCKET = Path("/run/llm-service/llm-supervisor.sock")
TMP_DEFAULT_SOCKET = "/tmp/llm-supervisor.sock"


def env_file_option() -> argparse.ArgumentParser:
    """A parent parser giving a subcommand ``--env-file`` (also accepted before the subcommand)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        help="settings file (default: ./.env when present)",
    )
    return parent


def settings_from(args: argparse.Namespace) -> Settings | None:
    """The settings named by ``--env-file`` (or the environment); None after printing a config error."""
    try:
        return load_settings(env_file=getattr(args, "env_file", None))
    except ConfigError as exc:
        print(f"llmctl: config error: {exc}", file=sys.stderr)
        return None


def discover_socket(configured: str, *, systemd_socket: Path | None = None) -> str:
    """The status socket to use: the systemd unit's when only the /tmp default was configured.

    ``configured`` is SUPERVISOR_SOCKET as the settings resolved it; anything but the bare /tmp default
    (an explicit SUPERVISOR_SOCKET, or one under $RUNTIME_DIRECTORY) is used as it is.
    """
    candidate = SYSTEMD_SOCKET if systemd_socket is None else systemd_socket
    if configured != TMP_DEFAULT_SOCKET:
        return configured
    try:
        is_socket = stat.S_ISSOCK(candidate.stat().st_mode)
    except OSError:  # absent, or a directory we may not search: fall back to the default
        return configured
    return str(candidate) if is_socket else configured
