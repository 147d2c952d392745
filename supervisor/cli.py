"""``llm-supervisor [--env-file PATH]``: parse, validate, wire the parts, run the loop.

Runs in the supervisor process (PID 1 in Docker, ``ExecStart`` under systemd). The CLI only parses
and validates; :class:`supervisor.arbiter.Arbiter` does the work. A bad config stops start-up with one
line naming the variable, and exit code CONFIG_ERROR. A WORKER_INSTANCE_PREFIX that another live
supervisor holds in the consumer group stops it with exit code INSTANCE_CONFLICT
(:mod:`supervisor.instance_claim`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import random
import selectors
import socket
import sys
from functools import partial
from pathlib import Path
from typing import cast

from llm_service import __version__, exit_codes
from llm_service.config import Settings, load_settings
from llm_service.errors import ConfigError
from llm_service.instance_id import instance_prefix
from llm_service.logs import configure_logging_from
from llm_service.status_table import StatusTable
from supervisor import cgroup
from supervisor.arbiter import Arbiter, Parts
from supervisor.instance_claim import check_prefix, previous_run_gone, record_path, write_record
from supervisor.lag import LagMonitor
from supervisor.limits import PsutilMeter
from supervisor.sdnotify import Notifier
from supervisor.spawn import ForkProcessOps, SystemClock, WorkerEntry, become_subreaper

log = logging.getLogger(__name__)

DEFAULT_ENTRY = "llm_worker.process:run_worker"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="llm-supervisor", description="Run the llm-service worker pool.")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="read settings from this .env file (default: ./.env when present)",
    )
    parser.add_argument("--version", action="version", version=f"llm-supervisor {__version__}")
    # Not for operators: the test suite runs the supervisor machinery with a fake worker.
    parser.add_argument("--worker-entry", default=DEFAULT_ENTRY, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_entry(spec: str) -> WorkerEntry:
    """Import ``module:function`` in the parent, before any fork, so a new worker starts in milliseconds."""
    module_name, _, attr = spec.partition(":")
    try:
        return cast(WorkerEntry, getattr(importlib.import_module(module_name), attr))
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"worker entry point {spec!r} cannot be loaded: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = partial(load_settings, env_file=args.env_file)
    try:
        settings = load()
        entry = load_entry(args.worker_entry)
    except ConfigError as exc:
        print(f"llm-supervisor: config error: {exc}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    try:
        configure_logging_from(settings, service="llm-supervisor")
    except OSError as exc:  # LOG_FILE passed its check but cannot be opened (permissions)
        print(f"llm-supervisor: config error: LOG_FILE: {exc}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    # A stand-in worker (the test suite's) joins no consumer group: there is no identity to claim.
    if args.worker_entry == DEFAULT_ENTRY and not claim_prefix(settings):
        return exit_codes.INSTANCE_CONFLICT
    return run(settings, entry=entry, load=load)


def claim_prefix(settings: Settings) -> bool:
    """False when another live supervisor holds our WORKER_INSTANCE_PREFIX in the group."""
    prefix = instance_prefix(settings.worker_instance_prefix, socket.gethostname())
    record = record_path(settings)
    group, pid = settings.kafka_group_id, os.getpid()
    previous = previous_run_gone(record, prefix=prefix, group=group, pid=pid)
    if previous is not None:
        log.info(
            "WORKER_INSTANCE_PREFIX=%s was held by this supervisor's previous run (pid %d, gone); "
            "taking its slots back",
            prefix,
            previous,
        )
        write_record(record, prefix=prefix, group=group, pid=pid)
        return True
    claim = check_prefix(settings, prefix)
    if claim.refused:
        log.error(
            "Cannot start: WORKER_INSTANCE_PREFIX=%s is held in group %s by a live process (%s); "
            "give each supervisor its own prefix (docs/scaling.md)",
            prefix,
            settings.kafka_group_id,
            ", ".join(claim.holders),
        )
        return False
    if claim.skipped:
        log.warning(
            "Instance prefix check skipped (%s); a second supervisor with WORKER_INSTANCE_PREFIX=%s "
            "would show as the instance_conflict alert",
            claim.skipped,
            prefix,
        )
    write_record(record, prefix=prefix, group=group, pid=pid)
    return True


def _limits() -> cgroup.Limits | None:
    """The cgroup whose limits CPU and RAM are judged against; None: the host's capacity."""
    limits = cgroup.find_limited()
    if limits is None:
        log.info("Limits: no cgroup v2 CPU or memory limit; judging the service's own use of the host")
    else:
        log.info(
            "Limits: cgroup %s (CPU %s cores, memory %s MiB)",
            limits.path,
            "unlimited" if limits.cpu_cores is None else f"{limits.cpu_cores:g}",
            "unlimited" if limits.memory_bytes is None else limits.memory_bytes // (1024 * 1024),
        )
    return limits


def run(settings: Settings, *, entry: WorkerEntry, load: partial[Settings]) -> int:
    if not become_subreaper():
        log.debug("Not a child subreaper; orphans of workers go to init")
    table = StatusTable.create(max(settings.worker_max_processes, settings.worker_processes))
    selector = selectors.DefaultSelector()
    parts = Parts(
        table=table,
        ops=ForkProcessOps(table=table, entry=entry),
        clock=SystemClock(),
        meter=PsutilMeter(limits=_limits()),
        notifier=Notifier.from_environ(os.environ, pid=os.getpid()),
        load_settings=load,
        hostname=socket.gethostname(),
        rand=random.random,
        selector=selector,
        lag=LagMonitor(selector=selector),
    )
    try:
        return Arbiter(settings=settings, parts=parts).run()
    except ConfigError as exc:
        log.error("Cannot start: %s", exc)
        return exit_codes.CONFIG_ERROR
    finally:
        selector.close()
        table.close()


if __name__ == "__main__":
    raise SystemExit(main())
