"""What every benchmark shares: a private local stack, the environment that points a process at it,
the input objects and task messages, and a meter of CPU time and RSS per kind of process.

The stack (real Kafka broker, real S3 server, the GigaChat emulator) is the one ``llm-devstack`` and the
test suite start (devstack.stack.Stack), on free ports in a temporary folder, always stopped at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from kafka import KafkaProducer

from devstack.paths import cache_dir
from devstack.stack import Stack, StackPorts
from tests.worker.harness import Names, create_topics, task_bytes, worker_env

INPUT_BUCKET = "llm-input"
INPUT_OBJECTS = 16  # tasks share a few input documents: the read is the same work, the setup is short
INPUT_TEXT = "Quarterly notes. " * 40  # ~700 bytes, a short document


@contextlib.contextmanager
def private_stack(tmp: Path) -> Iterator[Stack]:
    stack = Stack(cache=cache_dir(), state_dir=tmp / "stack", ports=StackPorts.free())
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def scripts_on_path() -> None:
    """Put this interpreter's console scripts (llm-supervisor) first on PATH, also when not run by make."""
    scripts = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"


def fresh_names(stack: Stack, label: str, *, partitions: int = 8) -> Names:
    """Topics, group and result prefix of one measured run, so runs never read each other's tasks."""
    names = Names.fresh(f"bench-{label}-{os.urandom(3).hex()}")
    create_topics(stack, names, partitions=partitions)
    return names


def own_dir(tmp: Path, names: Names) -> Path:
    """A folder of one run (status table, limiter, socket, logs): runs never share state."""
    path = tmp / names.group
    path.mkdir(parents=True, exist_ok=True)
    return path


def service_env(stack: Stack, names: Names, tmp: Path, **overrides: str) -> dict[str, str]:
    """The environment of the service (or a peer) on this stack: inherited env minus our own settings."""
    own = ("KAFKA_", "MINIO_", "GIGACHAT_", "WORKER_", "SUPERVISOR_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    base.update(stack.env())
    base["RUNTIME_DIRECTORY"] = str(tmp)
    # The disk of a shared benchmark machine may be nearly full; the free-space alert is not measured here.
    return worker_env(base, names, tmp, LIMIT_DISK_FREE_MB="1", **overrides)


def seed_inputs(stack: Stack) -> list[str]:
    """Put the input documents into S3 once per stack; returns their keys."""
    client = stack.s3.client()
    keys = [f"bench/doc-{i:02d}.txt" for i in range(INPUT_OBJECTS)]
    data = INPUT_TEXT.encode()
    for key in keys:
        client.put_object(INPUT_BUCKET, key, io.BytesIO(data), len(data), content_type="text/plain")
    return keys


def submit(stack: Stack, topic: str, count: int, inputs: list[str], *, prefix: str = "t") -> list[str]:
    """Send ``count`` tasks, each reading one input document; returns their ids.

    Spread evenly over the topic's partitions, in turn: hashed by key (t-00000..t-00639), the 8
    partitions got 64 to 94 tasks, and two workers holding half the partitions each got unequal
    halves; the run would measure the key hash, not the systems.
    """
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=10)
    partitions = sorted(producer.partitions_for(topic))
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    for i, task_id in enumerate(ids):
        body = task_bytes(
            task_id,
            prompt="Summarise the document in one line",
            input={"bucket": INPUT_BUCKET, "key": inputs[i % len(inputs)]},
        )
        producer.send(topic, key=task_id.encode(), value=body, partition=partitions[i % len(partitions)])
    producer.flush(timeout=120)
    producer.close(timeout=10)
    return ids


def event_ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[min(98, max(0, round(q) - 1))]


def task_figures(events: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    """Throughput (first RECEIVED to last final) and per-task latency (its RECEIVED to its final)."""
    wanted = set(ids)
    received: dict[str, float] = {}
    finals: dict[str, dict[str, Any]] = {}
    for event in events:
        task_id = event.get("task_id")
        if task_id not in wanted:
            continue
        if event["status"] == 1:
            received.setdefault(task_id, event_ts(event))
        elif event["status"] in (3, 4):
            finals.setdefault(task_id, event)
    completed = [t for t, e in finals.items() if e["status"] == 3]
    latencies = [event_ts(finals[t]) - received[t] for t in completed if t in received]
    span = max(event_ts(e) for e in finals.values()) - min(received.values()) if finals else 0.0
    return {
        "tasks": len(ids),
        "completed": len(completed),
        "failed": len(finals) - len(completed),
        "elapsed_s": round(span, 3),
        "throughput_tasks_per_s": round(len(completed) / span, 3) if span > 0 else 0.0,
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p99_s": round(percentile(latencies, 99), 3),
    }


Finder = Callable[[], list[psutil.Process]]


def _cpu(proc: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        times = proc.cpu_times()
        return float(times.user + times.system)
    return 0.0


def _rss_mb(proc: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        return float(proc.memory_info().rss) / 2**20
    return 0.0


@dataclass
class Meter:
    """CPU seconds and RSS per kind of process ("supervisor", "worker", "broker", ...) over a span.

    ``start()`` notes each process's CPU time; ``stop()`` returns, per kind, the CPU time spent since
    (processes that appeared meanwhile count from 0) and the largest RSS of one process of the kind.
    """

    kinds: dict[str, Finder]
    _before: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        self._before = {p.pid: _cpu(p) for find in self.kinds.values() for p in find()}

    def stop(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        for kind, find in self.kinds.items():
            procs = find()
            cpu = sum(max(0.0, _cpu(p) - self._before.get(p.pid, 0.0)) for p in procs)
            rss = max((_rss_mb(p) for p in procs), default=0.0)
            result[kind] = {"cpu_s": round(cpu, 3), "rss_mb": round(rss, 1), "processes": len(procs)}
        return result


def stack_kinds(stack: Stack) -> dict[str, Finder]:
    """The stack's own processes: they work for every system measured, so they count in its total."""

    def finder(managed: Any) -> Finder:
        def find() -> list[psutil.Process]:
            proc = managed.process()
            return [proc] if proc is not None else []

        return find

    return {
        "broker": finder(stack.broker.proc),
        "s3": finder(stack.s3.proc),
        "emulator": finder(stack.emulator.proc),
    }


def tree(pid: int) -> Finder:
    """The process ``pid`` itself."""

    def find() -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [psutil.Process(pid)]
        return []

    return find


def children(pid: int) -> Finder:
    """Every descendant of ``pid`` (the supervisor's workers)."""

    def find() -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return list(psutil.Process(pid).children(recursive=True))
        return []

    return find
