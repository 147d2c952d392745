"""``llmctl COMMAND ...``: parse the command line and hand over to the command's module.

Each module in COMMAND_MODULES has ``register(subparsers, parents)``, which adds its subcommands
with ``set_defaults(handler=...)``; a handler takes the parsed arguments and returns the exit code.
Adding a module is one line here.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import cast

from llmctl.common import env_file_option

COMMAND_MODULES = (
    "llmctl.submit",  # submit, wait
    "llmctl.control",  # status, health, reload, scale, drain, resume
    "llmctl.lag",  # lag
    "llmctl.stats",  # stats
    "llmctl.audit",  # audit
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    common = env_file_option()
    parser = argparse.ArgumentParser(
        prog="llmctl", description="Control llm-service and submit tasks to it.", parents=[common]
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, [common])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = cast(Handler, args.handler)
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
