"""What every ``llmctl`` command shares: the ``--env-file`` option and loading the settings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llm_service.config import Settings, load_settings
from llm_service.errors import ConfigError

CONFIG_ERROR = 2


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
