"""A stand-in for ``llm_worker.process.run_worker`` that exercises the supervisor without Kafka.

Runs in a worker process forked by a real ``llm-supervisor`` (``--worker-entry fake_worker:run`` with
this directory on PYTHONPATH). It heartbeats into its slot, obeys the control area, "processes"
tasks that each take FAKE_TASK_MS, drains on SIGTERM (finishing what is in flight) and stops at once
on SIGQUIT. FAKE_WORKER_MODE picks a misbehaviour: ``boot_fail``, ``config_error``, ``crash_after``
(crash after FAKE_CRASH_AFTER_S), ``hog`` (grow RSS by 20 MiB a second).
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

from llm_service import exit_codes
from llm_service.config import Settings
from llm_service.status_table import SlotWriter, Stage, WorkerState


class _Flags:
    def __init__(self) -> None:
        self.drain = False
        self.quit = False

    def on_term(self, signum: int, frame: FrameType | None) -> None:
        self.drain = True

    def on_quit(self, signum: int, frame: FrameType | None) -> None:
        self.quit = True


def run(
    *, settings: Settings, slot: int, progress: SlotWriter, worker_id: str, group_instance_id: str | None
) -> int:
    mode = os.environ.get("FAKE_WORKER_MODE", "")
    if mode == "boot_fail":
        progress.update(bootstrap_failures=5)
        return exit_codes.BOOT_FAILED
    if mode == "config_error":
        return exit_codes.CONFIG_ERROR
    if mode == "orphan":
        _leave_an_orphan()
    flags = _Flags()
    signal.signal(signal.SIGTERM, flags.on_term)
    signal.signal(signal.SIGQUIT, flags.on_quit)
    progress.update(pid=os.getpid(), state=WorkerState.RUNNING, capacity=settings.worker_max_concurrent_tasks)
    _loop(settings, progress, flags, mode)
    progress.update(state=WorkerState.STOPPED)
    return exit_codes.OK


def _leave_an_orphan() -> None:
    """Fork a grandchild that outlives this worker by a moment; its pid goes to FAKE_ORPHAN_FILE."""
    pid = os.fork()
    if pid == 0:
        time.sleep(0.5)
        os._exit(0)
    with open(os.environ["FAKE_ORPHAN_FILE"], "w", encoding="utf-8") as out:
        out.write(str(pid))


def _loop(settings: Settings, progress: SlotWriter, flags: _Flags, mode: str) -> None:
    task_s = float(os.environ.get("FAKE_TASK_MS", "300")) / 1000
    crash_at = time.monotonic() + float(os.environ.get("FAKE_CRASH_AFTER_S", "1e9"))
    ballast: list[bytearray] = []
    in_flight: list[tuple[int, float]] = []
    counter = 0
    while not flags.quit:
        now = time.monotonic()
        progress.heartbeat()
        control = progress.control()
        flags.drain = flags.drain or control.drain
        for entry, end in [t for t in in_flight if t[1] <= now]:
            progress.task_left_place()
            progress.task_finished(entry, ok=True, tokens=10, processing_ms=task_s * 1000)
            in_flight.remove((entry, end))
        if flags.drain and not in_flight:
            return
        limit = min(settings.worker_max_concurrent_tasks, control.concurrency_cap or 1_000_000)
        if not (control.intake_paused or flags.drain) and len(in_flight) < limit:
            counter += 1
            entry = progress.task_started(f"fake-{os.getpid()}-{counter}")
            progress.task_took_place()
            progress.task_stage(entry, Stage.CALLING_MODEL)
            in_flight.append((entry, now + task_s))
        if mode == "crash_after" and now > crash_at:
            os._exit(exit_codes.CRASHED)
        if mode == "hog":
            ballast.append(bytearray(os.urandom(1024 * 1024)))
        time.sleep(0.05)
