"""``llm-gigachat-emulator``: parse and validate the command line, then hand over to ``runner.run``.

Exit codes: 0 clean stop (SIGTERM/SIGINT), 2 bad arguments, 3 cannot listen on the address.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gigachat_emulator import __version__
from gigachat_emulator.auth import DEFAULT_AUTH_KEY, SCOPES
from gigachat_emulator.calls import DEFAULT_CAPACITY
from gigachat_emulator.config import FaultConfig, knobs
from gigachat_emulator.errors import ConfigError
from gigachat_emulator.runner import run
from gigachat_emulator.state import ServerOptions

_MAX_PORT = 65535


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; the fault/latency flags come from ``FaultConfig``'s declarations."""
    parser = argparse.ArgumentParser(
        prog="llm-gigachat-emulator", description="Local emulator of the GigaChat REST API (v1)."
    )
    parser.add_argument("--version", action="version", version=f"llm-gigachat-emulator {__version__}")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free one (default: %(default)s)")
    parser.add_argument("--auth-key", default=DEFAULT_AUTH_KEY, help="the accepted authorization key (Basic)")
    parser.add_argument(
        "--scope", default="GIGACHAT_API_PERS", choices=sorted(SCOPES), help="the scope the key is granted"
    )
    parser.add_argument("--ready-file", help="write the bound port to this file once listening")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault-injection PRNG (default: 0)")
    parser.add_argument(
        "--call-log-size", type=int, default=DEFAULT_CAPACITY, help="calls kept (default: %(default)s)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    for knob in knobs():
        if isinstance(knob.default, bool):
            parser.add_argument(
                _flag(knob.name), dest=knob.name, action="store_true", help=knob.metadata["help"]
            )
            continue
        default = ",".join(map(str, knob.default)) if isinstance(knob.default, tuple) else knob.default
        help_text = f"{knob.metadata['help']} (default: {default})"
        parser.add_argument(_flag(knob.name), dest=knob.name, metavar="VALUE", help=help_text)
    return parser


def parse_options(argv: Sequence[str] | None = None) -> tuple[ServerOptions, FaultConfig, str]:
    """Return server options, the initial fault config and the log level; exits 2 on a bad value."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= _MAX_PORT:
        parser.error(f"--port: must be within 0..{_MAX_PORT}, got {args.port}")
    if args.call_log_size < 1:
        parser.error(f"--call-log-size: must be >= 1, got {args.call_log_size}")
    config = FaultConfig()
    for knob in knobs():
        value = getattr(args, knob.name)
        if value is None or value is False:
            continue
        try:
            config = config.updated({knob.name: value})
        except ConfigError as exc:
            parser.error(f"{_flag(knob.name)}: {str(exc).partition(': ')[2]}")
    options = ServerOptions(
        host=args.host,
        port=args.port,
        auth_key=args.auth_key,
        scope=args.scope,
        seed=args.seed,
        ready_file=args.ready_file,
        call_log_capacity=args.call_log_size,
    )
    return options, config, str(args.log_level)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    options, config, log_level = parse_options(argv)
    logging.basicConfig(
        level=log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(options, config)
