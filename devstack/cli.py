"""``llm-devstack up|down|status|env|provision|service``: the local stack on 127.0.0.1.

Parses, validates and calls :class:`devstack.stack.Stack`; nothing else lives here.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from devstack.paths import cache_dir, default_state_dir
from devstack.provision import provision_all
from devstack.service import LocalService, uses_real_gigachat
from devstack.stack import Stack, StackPorts
from llm_service import __version__
from llm_service.errors import StackError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-devstack", description=__doc__)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the running stack keeps data, logs and pid files "
        "(default: <cache>/stack; cache: $LLM_SERVICE_CACHE or ~/.cache/llm-service)",
    )
    parser.add_argument("--version", action="version", version=f"llm-devstack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="provision on first use, start what is not running, create topics and buckets"
    )
    defaults = StackPorts()
    up.add_argument("--kafka-port", type=int, default=defaults.kafka)
    up.add_argument("--kafka-controller-port", type=int, default=defaults.kafka_controller)
    up.add_argument("--s3-port", type=int, default=defaults.s3)
    up.add_argument("--emulator-port", type=int, default=defaults.emulator)
    up.add_argument(
        "--emulator-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass an option to llm-gigachat-emulator, e.g. --emulator-arg=--latency=0.5",
    )
    sub.add_parser("down", help="stop every process of the stack (and the service, if started)")
    service = sub.add_parser("service", help="run llm-supervisor in the background on the stack")
    service.add_argument("action", choices=["start", "stop"])
    sub.add_parser("status", help="which processes run; exit 0 when all do")
    sub.add_parser("env", help="print export lines that point the service at the stack")
    sub.add_parser("provision", help="only download Kafka and build the S3 server into the cache")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="llm-devstack: %(message)s", stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines narrate every connection
    cache = cache_dir()
    state_dir = args.state_dir or default_state_dir()
    try:
        return _run(args, cache=cache, state_dir=state_dir)
    except StackError as exc:
        print(f"llm-devstack: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, *, cache: Path, state_dir: Path) -> int:
    if args.command == "provision":
        provision_all(cache)
        print(f"provisioned into {cache}")
        return 0
    if args.command == "up":
        ports = StackPorts(
            kafka=args.kafka_port,
            kafka_controller=args.kafka_controller_port,
            s3=args.s3_port,
            emulator=args.emulator_port,
        )
        stack = Stack(cache=cache, state_dir=state_dir, ports=ports, emulator_args=tuple(args.emulator_arg))
        began = time.monotonic()
        started = stack.up()
        took = time.monotonic() - began
        print(
            f"started {', '.join(started)} in {took:.1f}s"
            if started
            else "stack already running; nothing changed"
        )
        _print_reach(stack)
        return 0
    stack = Stack(cache=cache, state_dir=state_dir)
    service = LocalService(stack=stack)
    if args.command == "service":
        return _service(service, args.action)
    if args.command == "down":
        service.stop()
        stack.down()
        print("stack stopped")
        return 0
    if args.command == "status":
        states = stack.status()
        for name, running in states.items():
            if name != "any":
                print(f"{name:18} {'running' if running else 'stopped'}")
        return 0 if all(v for k, v in states.items() if k != "any") else 1
    for name, value in service.env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _service(service: LocalService, action: str) -> int:
    if action == "stop":
        service.stop()
        print("service stopped")
        return 0
    backend = "the real GigaChat" if uses_real_gigachat(service.environ) else "the GigaChat emulator"
    if service.start():
        print(f"llm-supervisor started against {backend}; log: {service.proc.log_file}")
    else:
        print("llm-supervisor already running; nothing changed")
    print(f"  status:  SUPERVISOR_SOCKET={service.socket_path} llmctl status")
    return 0


def _print_reach(stack: Stack) -> None:
    print(f"  Kafka:             {stack.kafka_bootstrap}")
    print(f"  S3 (versitygw):    http://{stack.s3_endpoint}  (access key {stack.s3_access_key})")
    print(f"  GigaChat emulator: {stack.emulator_url}")
    print('  point the service at it:  eval "$(llm-devstack env)"')


if __name__ == "__main__":
    raise SystemExit(main())
