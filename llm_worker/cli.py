"""``llm-worker [--env-file PATH] [--slot N]``: one worker in the foreground, without the supervisor.

For debugging, or when an outside orchestrator runs one process per container. The worker gets a
private one-slot status table. ``--slot`` gives it a stable identity: the static Kafka membership
``llm-worker-<prefix>-<slot>`` (WORKER_INSTANCE_PREFIX, default the host name), so a restarted
container takes its partitions back without a rebalance.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from llm_service import __version__, exit_codes
from llm_service.config import load_settings
from llm_service.errors import ConfigError
from llm_service.instance_id import group_instance_id, instance_prefix
from llm_service.status_table import StatusTable
from llm_service.worker_setup import prepare_worker_process
from llm_worker.process import run_worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="settings file (default: ./.env when present)")
    parser.add_argument("--slot", type=int, help="stable slot number: enables static group membership")
    parser.add_argument("--version", action="version", version=f"llm-worker {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(env_file=args.env_file)
    except ConfigError as exc:
        print(f"llm-worker: config error: {exc}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    slot = args.slot if args.slot is not None else 0
    host = socket.gethostname()
    prepare_worker_process(settings=settings, slot=slot, supervised=False)
    table = StatusTable.create(1)
    try:
        code = run_worker(
            settings=settings,
            slot=slot,
            progress=table.writer(0),
            worker_id=f"{host}:{slot}:{os.getpid()}",
            group_instance_id=(
                group_instance_id(instance_prefix(settings.worker_instance_prefix, host), slot)
                if args.slot is not None
                else None
            ),
        )
    finally:
        table.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: after a fast stop a task thread may still sit in an HTTP call, and interpreter
    # shutdown would join it. Its task was handed back uncommitted, so leaving now loses nothing.
    os._exit(code)
