"""What every ``llmctl`` command shares: ``--env-file``, ``--version``, loading the settings, ``--since``,
finding the socket."""

from __future__ import annotations

import argparse
import re
import stat
import sys
import time
from pathlib import Path

from llm_service import __version__
from llm_service.clients import kafka_failure_hint
from llm_service.config import Settings, load_settings
from llm_service.errors import ConfigError

CONFIG_ERROR = 2
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# Where the systemd unit's supervisor listens (RuntimeDirectory=llm-service in
# deploy/systemd/llm-service.service). An operator's shell has no RUNTIME_DIRECTORY, so without this
# llmctl would look for the /tmp default and miss the service.
SYSTEMD_SOCKET = Path("/run/llm-service/llm-supervisor.sock")
TMP_DEFAULT_SOCKET = "/tmp/llm-supervisor.sock"


def env_file_option() -> argparse.ArgumentParser:
    """A parent parser giving every subcommand ``--env-file`` and ``--version`` (also before it)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        help="settings file (default: ./.env when present)",
    )
    parent.add_argument("--version", action="version", version=f"llmctl {__version__}")
    return parent


def settings_from(args: argparse.Namespace) -> Settings | None:
    """The settings named by ``--env-file`` (or the environment); None after printing a config error."""
    try:
        return load_settings(env_file=getattr(args, "env_file", None))
    except ConfigError as exc:
        print(f"llmctl: config error: {exc}", file=sys.stderr)
        return None


def duration_s(text: str) -> float:
    """``7d``, ``24h``, ``30m``, ``90s``, ``2w`` (or plain seconds) as seconds; argparse's type."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 7d, 24h, 30m, 90s")
    return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]


def since_ms(seconds: float, *, now: float | None = None) -> int:
    """The wall time ``seconds`` ago, in Kafka's milliseconds."""
    return int(((time.time() if now is None else now) - seconds) * 1000)


def describe(settings: Settings, exc: BaseException) -> str:
    """A Kafka error as one line, with the SASL hint when it applies."""
    hint = kafka_failure_hint(settings, exc)
    return f"{type(exc).__name__}: {exc}{f' ({hint})' if hint else ''}"


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
