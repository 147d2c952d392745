"""One measured run of one system at one point (model latency L, C tasks in flight, N tasks).

The system starts and becomes ready (the supervisor's workers RUNNING, or the peer owning its
partitions), then the meter notes every process's CPU time, N tasks are sent and the run waits for
N final statuses. Throughput runs from the first RECEIVED status to the last final one; task latency
from a task's RECEIVED to its final status; CPU time is per kind of process over the same span.
The driver's own process (sending tasks, reading statuses) is the user and is not counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    Meter,
    children,
    fresh_names,
    own_dir,
    service_env,
    stack_kinds,
    submit,
    task_figures,
    tree,
)
from devstack.stack import Stack
from llmctl.control import Unreachable
from tests.supervisor.harness import REPO, Supervisor
from tests.waiting import wait_until
from tests.worker.harness import Names, StatusLog

WARM_UP_TASKS = 16  # twice the partitions of the tasks topic (8); fewer for the one-at-a-time loop
SERVICE_KINDS = ("supervisor", "worker", "peer")


@dataclass(frozen=True)
class Point:
    latency_s: float
    concurrency: int
    tasks: int

    @property
    def limit(self) -> float:
        """C / L: no system does better than C tasks per L seconds."""
        return self.concurrency / self.latency_s


@dataclass(frozen=True)
class Run:
    stack: Stack
    inputs: list[str]
    tmp: Path


def warm_up_tasks(concurrency: int) -> int:
    """At least one wave of C, for every system alike: the service's host call cap starts a new host at
    one call and opens in slow start while callers wait (docs/gigachat-client.md, "Finding the
    account's limit"); a measured run starts from where a running host is. bench/account_limit.py
    measures that first opening."""
    return max(concurrency, min(WARM_UP_TASKS, 2 * concurrency))


def service(run: Run, point: Point, workers: int) -> dict[str, Any]:
    """``llm-supervisor`` with ``workers`` real workers, C split between them."""
    names = fresh_names(run.stack, f"svc{workers}")
    env = service_env(
        run.stack,
        names,
        own_dir(run.tmp, names),
        WORKER_PROCESSES=str(workers),
        WORKER_MAX_CONCURRENT_TASKS=str(max(1, point.concurrency // workers)),
        GIGACHAT_MAX_CONCURRENCY=str(point.concurrency),
    )
    sup = Supervisor(env=env, tmp_path=own_dir(run.tmp, names), fake=False, name="sup")
    try:
        sup.running(workers, timeout=180)
        kinds = {"supervisor": tree(sup.proc.pid), "worker": children(sup.proc.pid)}
        with _status_client(sup):
            figures = _measure(run, point, names, kinds)
    except AssertionError:
        sys.stderr.write(sup.log_text()[-6000:])
        raise
    finally:
        sup.stop(timeout=60)
    return {"system": f"llm-service, {workers} worker{'s' if workers > 1 else ''}", **figures}


def peer(run: Run, point: Point, loop: str) -> dict[str, Any]:
    """One of the hand-written loops of bench/peers/ (``thread-pool`` with C threads, ``one-at-a-time``)."""
    names = fresh_names(run.stack, loop)
    env = {**service_env(run.stack, names, own_dir(run.tmp, names)), "PYTHONPATH": str(REPO)}
    log_path = own_dir(run.tmp, names) / "peer.log"
    argv = [sys.executable, "-m", "bench.peers.loops", loop, "--threads", str(point.concurrency)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _peer_ready(proc, log_path), timeout=120, what=f"{loop} peer ready")
        figures = _measure(run, point, names, {"peer": tree(proc.pid)})
    except AssertionError:
        sys.stderr.write(log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        _stop(proc)
    return {"system": f"{loop} loop", **figures}


def _peer_ready(proc: subprocess.Popen[bytes], log_path: Path) -> bool:
    text = log_path.read_text(errors="replace")
    if proc.poll() is not None:
        raise AssertionError(f"peer exited ({proc.returncode}):\n{text[-3000:]}")
    return "peer ready" in text


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _measure(run: Run, point: Point, names: Names, kinds: dict[str, Any]) -> dict[str, Any]:
    meter = Meter(kinds={**kinds, **stack_kinds(run.stack)})
    status_log = StatusLog(run.stack.kafka_bootstrap, names.status)
    try:
        # Warm-up, not measured: tasks spread over the partitions end once the group has settled (a
        # second worker joining moves partitions), the connections and tokens exist and the call cap
        # has opened.
        warm = submit(run.stack, names.tasks, warm_up_tasks(point.concurrency), run.inputs, prefix="warm")
        status_log.wait_finals(warm, timeout=300)
        meter.start()
        ids = submit(run.stack, names.tasks, point.tasks, run.inputs)
        # Generous: a busy shared machine may run far below the limit; a stuck run still ends.
        timeout = 120 + 3 * point.tasks * point.latency_s / min(point.concurrency, point.tasks)
        status_log.wait_finals(ids, timeout=timeout)
        processes = meter.stop()
        figures = task_figures(status_log.events(), ids)
    finally:
        status_log.close()
    return _derived(point, figures, processes)


def _derived(point: Point, figures: dict[str, Any], processes: dict[str, dict[str, float]]) -> dict[str, Any]:
    done = max(1, figures["completed"])
    own = sum(v["cpu_s"] for k, v in processes.items() if k in SERVICE_KINDS)
    every = sum(v["cpu_s"] for v in processes.values())
    return {
        "latency_s": point.latency_s,
        "concurrency": point.concurrency,
        "limit_tasks_per_s": round(point.limit, 3),
        **figures,
        "ratio_to_limit": round(figures["throughput_tasks_per_s"] / point.limit, 4),
        "cpu_ms_per_task": {k: round(1000 * v["cpu_s"] / done, 3) for k, v in processes.items()},
        "own_cpu_ms_per_task": round(1000 * own / done, 3),
        "all_cpu_ms_per_task": round(1000 * every / done, 3),
        "processes": processes,
    }


@contextlib.contextmanager
def _status_client(sup: Supervisor) -> Iterator[None]:
    """A status client asking the supervisor once a second, as a dashboard would (part of the goal)."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(Unreachable):
                sup.ask("status")

    thread = threading.Thread(target=poll, name="status-client", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
