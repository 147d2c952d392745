"""Worker throughput against its limit C / L, and the worker's CPU time per task. Prints JSON.

One ``llm-worker`` process with C tasks in flight (WORKER_MAX_CONCURRENT_TASKS = GIGACHAT_MAX_CONCURRENCY
= C) works through N tasks while the GigaChat emulator answers every call after L seconds. No worker
can beat C / L tasks per second; the ratio to it shows what the consume → S3 → model → S3 → status →
commit path costs around the model call. Throughput is measured from the first RECEIVED status to the
last COMPLETED one (so worker start-up is not counted); CPU time is the worker's user+system time
over the same span (psutil).

Runs a private stack (Kafka, S3 server, emulator) on free ports in a temporary folder and stops it at
the end::

    python bench/worker_throughput.py [--tasks 640] [--concurrency 64] [--latency 1.0]

``--workers N`` runs ``llm-supervisor`` with N workers instead (C split between them) and a status
client asking it for ``status`` once a second, as ``llmctl status`` in a loop would; CPU time is then
reported per part: the supervisor and the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import requests
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from devstack.paths import cache_dir
from devstack.stack import Stack, StackPorts


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=1.0, help="emulator latency per call, seconds")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--workers", type=int, default=0, help="0: one bare llm-worker; N: llm-supervisor with N workers"
    )
    return parser.parse_args()


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def _worker_env(stack: Stack, run: str, workdir: Path, concurrency: int, workers: int) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MINIO_", "GIGACHAT_", "WORKER_"))
    }
    env.update(stack.env())
    env.update(
        {
            "KAFKA_TASKS_TOPIC": f"{run}-tasks",
            "KAFKA_STATUS_TOPIC": f"{run}-status",
            "KAFKA_DLQ_TOPIC": f"{run}-dlq",
            "KAFKA_GROUP_ID": f"{run}-group",
            "MINIO_OUTPUT_PREFIX": f"{run}/",
            "WORKER_MAX_CONCURRENT_TASKS": str(max(1, concurrency // max(1, workers))),
            "WORKER_PROCESSES": str(max(1, workers)),
            "WORKER_MAX_PROCESSES": str(max(1, workers)),
            "SUPERVISOR_SOCKET": str(workdir / "supervisor.sock"),
            "GIGACHAT_MAX_CONCURRENCY": str(concurrency),
            "GIGACHAT_LIMITER_DIR": str(workdir / "limiter"),
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def _send(stack: Stack, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=10)
    for i in range(count):
        task_id = f"bench-{i:05d}"
        value = json.dumps({"task_id": task_id, "prompt": f"Summarise item {i} in one line"}).encode()
        producer.send(topic, key=task_id.encode(), value=value)
    producer.flush(timeout=60)
    producer.close()


def _collect(stack: Stack, topic: str, count: int, timeout: float) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    events: list[dict[str, Any]] = []
    finals: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(finals) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            for record in batch:
                event = json.loads(record.value)
                events.append(event)
                if event["status"] in (3, 4):
                    finals.add(event["task_id"])
    consumer.close(autocommit=False)
    return events


def _wait_started(
    log_path: Path, worker: subprocess.Popen[bytes], workers: int, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while log_path.read_bytes().count(b"Worker started") < max(1, workers):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker did not start:\n" + log_path.read_text(errors="replace")[-2000:])
        time.sleep(0.05)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _cpu_parts(process: psutil.Process, workers: int) -> dict[str, float]:
    """CPU seconds so far: the bare worker, or the supervisor and its workers (live children)."""
    if not workers:
        return {"worker": _cpu(process)}
    return {"supervisor": _cpu(process), "workers": sum(_cpu(c) for c in process.children(recursive=True))}


class StatusPoller(threading.Thread):
    """Asks the supervisor for its status once a second on a new connection, as a monitoring loop would."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(daemon=True)
        self._path = socket_path
        self.stop = threading.Event()
        self.replies = 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.settimeout(5.0)
                    conn.connect(str(self._path))
                    conn.sendall(b'{"cmd": "status"}\n')
                    if conn.makefile("rb").readline():
                        self.replies += 1
            except OSError:
                continue


def _measure(stack: Stack, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run = f"bench-{uuid.uuid4().hex[:8]}"
    stack.create_topic(f"{run}-tasks", 8)
    stack.create_topic(f"{run}-status", 3)
    stack.create_topic(f"{run}-dlq", 3)
    requests.post(
        f"{stack.emulator_url}/_emulator/config",
        json={"latency": args.latency, "latency_per_token": 0, "error_rate": 0, "max_concurrency": 0},
        timeout=10,
    ).raise_for_status()
    _send(stack, f"{run}-tasks", args.tasks)
    log = (workdir / "worker.log").open("wb")
    command = ["-m", "supervisor.cli"] if args.workers else ["-m", "llm_worker"]
    worker = subprocess.Popen(
        [sys.executable, *command],
        env=_worker_env(stack, run, workdir, args.concurrency, args.workers),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        process = psutil.Process(worker.pid)
        _wait_started(workdir / "worker.log", worker, args.workers)
        poller = StatusPoller(workdir / "supervisor.sock")
        if args.workers:
            poller.start()
        cpu_before = _cpu_parts(process, args.workers)  # after start-up: not per-task costs
        wall = time.monotonic()
        events = _collect(stack, f"{run}-status", args.tasks, args.timeout)
        cpu_after = _cpu_parts(process, args.workers)
        wall = time.monotonic() - wall
        poller.stop.set()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()
    cpu = {part: cpu_after[part] - cpu_before[part] for part in cpu_after}
    busy = {f"{part}_cpu_percent_of_a_core": round(100 * seconds / wall, 2) for part, seconds in cpu.items()}
    return _summary(args, events, cpu) | busy | ({"status_replies": poller.replies} if args.workers else {})


def _summary(args: argparse.Namespace, events: list[dict[str, Any]], cpu: dict[str, float]) -> dict[str, Any]:
    received = [_ts(e) for e in events if e["status"] == 1]
    finals = {e["task_id"]: e for e in events if e["status"] in (3, 4)}
    completed = [e for e in finals.values() if e["status"] == 3]
    elapsed = max(_ts(e) for e in finals.values()) - min(received) if finals else float("nan")
    limit = args.concurrency / args.latency
    throughput = len(completed) / elapsed if elapsed > 0 else 0.0
    return {
        "tasks": args.tasks,
        "completed": len(completed),
        "failed": len(finals) - len(completed),
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "limit_tasks_per_s": round(limit, 2),
        "elapsed_s": round(elapsed, 2),
        "throughput_tasks_per_s": round(throughput, 2),
        "ratio_to_limit": round(throughput / limit, 3),
        "goal_ratio": 0.9,
        "workers": args.workers,
        "load_average_1m": round(os.getloadavg()[0], 1),
        **{f"{part}_cpu_s": round(seconds, 2) for part, seconds in cpu.items()},
        **{
            f"{part}_cpu_ms_per_task": round(1000 * seconds / max(1, len(completed)), 2)
            for part, seconds in cpu.items()
        },
        "cpu_ms_per_task": round(1000 * sum(cpu.values()) / max(1, len(completed)), 2),
        "avg_processing_ms": round(
            sum(float(e["processing_ms"]) for e in completed) / max(1, len(completed)), 1
        ),
    }


def main() -> int:
    args = _parse()
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as tmp:
        workdir = Path(tmp)
        stack = Stack(cache=cache_dir(), state_dir=workdir / "stack", ports=StackPorts.free())
        try:
            stack.up()
            result = _measure(stack, args, workdir)
        finally:
            stack.down()
    print(json.dumps(result, indent=2))
    return 0 if result["failed"] == 0 and result["completed"] == args.tasks else 1


if __name__ == "__main__":
    raise SystemExit(main())
