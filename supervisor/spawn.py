"""The process seam: fork, signal and reap workers, and read the clock (docs/architecture.md, "Conventions").

The supervisor's decisions call a :class:`ProcessOps` and a :class:`Clock`; production uses
:class:`ForkProcessOps` and :class:`SystemClock`, tests use fakes and never fork or sleep.

:func:`child_main` is the only code here that runs in the worker process: between ``os.fork`` and
``os._exit``. It closes the parent's files (``in_child``), runs the worker set-up every worker
process shares (llm_service/worker_setup.py: signals, random state, systemd's variables,
faulthandler on SIGUSR2 so the parent can ask a hung worker for a traceback, logging), and calls the
worker entry point with plain config; the worker makes its own Kafka, S3 and HTTP clients.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from llm_service import exit_codes
from llm_service.config import Settings
from llm_service.status_table import SlotWriter, StatusTable, WorkerState
from llm_service.worker_setup import prepare_worker_process

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


class WorkerEntry(Protocol):
    """``llm_worker.process.run_worker``'s signature; returns the process exit code."""

    def __call__(
        self,
        *,
        settings: Settings,
        slot: int,
        progress: SlotWriter,
        worker_id: str,
        group_instance_id: str | None,
    ) -> int: ...


@dataclass(frozen=True, kw_only=True)
class SpawnRequest:
    """Everything a new worker needs: plain values only, nothing with a socket or a thread."""

    slot: int
    settings: Settings
    hostname: str
    group_instance_id: str


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    """CLOCK_MONOTONIC is shared by all processes on Linux, so it compares with worker heartbeats."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class ProcessOps(Protocol):
    """What the supervisor does to processes. Called from the supervisor's main loop only."""

    def spawn(self, request: SpawnRequest, *, in_child: Callable[[], None]) -> int:
        """Start a worker for ``request``; return its pid. ``in_child`` runs first in the child."""
        ...

    def kill(self, pid: int, sig: int) -> bool:
        """Send ``sig``; False when the process is already gone."""
        ...

    def reap(self) -> list[tuple[int, int]]:
        """Every exited child (workers and orphans alike) as (pid, wait status); never blocks."""
        ...


class ForkProcessOps:
    """Real processes: ``os.fork`` + :func:`child_main`, ``os.kill``, ``os.waitpid(-1, WNOHANG)``."""

    def __init__(self, *, table: StatusTable, entry: WorkerEntry) -> None:
        self._table = table
        self._entry = entry

    def spawn(self, request: SpawnRequest, *, in_child: Callable[[], None]) -> int:
        pid = os.fork()
        if pid == 0:
            child_main(request, table=self._table, entry=self._entry, in_child=in_child)
        return pid

    def kill(self, pid: int, sig: int) -> bool:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> list[tuple[int, int]]:
        # waitpid(-1) also collects orphans re-parented to us when we run as PID 1 in a container.
        found: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return found
            if pid == 0:
                return found
            found.append((pid, status))


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants (a worker's own children) to us, as if we were PID 1.

    Then ``reap()`` collects them too instead of leaving that to init. Best effort: False elsewhere.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def child_main(
    request: SpawnRequest, *, table: StatusTable, entry: WorkerEntry, in_child: Callable[[], None]
) -> NoReturn:
    """The worker process from fork to exit. Never returns; the exit code tells the parent how it ended."""
    code = exit_codes.CRASHED
    try:
        in_child()
        prepare_worker_process(settings=request.settings, slot=request.slot, supervised=True)
        progress = table.writer(request.slot)
        pid = os.getpid()
        progress.update(
            pid=pid, state=WorkerState.BOOTING, started_at=time.time(), heartbeat=time.monotonic()
        )
        code = entry(
            settings=request.settings,
            slot=request.slot,
            progress=progress,
            worker_id=f"{request.hostname}:{request.slot}:{pid}",
            group_instance_id=request.group_instance_id,
        )
    except SystemExit as exc:
        code = (
            exc.code
            if isinstance(exc.code, int)
            else (exit_codes.OK if exc.code is None else exit_codes.CRASHED)
        )
    except BaseException:  # the process boundary: log it and turn it into an exit code
        log.exception("Worker in slot %d crashed", request.slot)
        code = exit_codes.CRASHED
    finally:
        _flush_streams()
        os._exit(code)


def _flush_streams() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
