"""Does the host-wide call cap find the account's real concurrency limit? Prints JSON.

The GigaChat emulator admits ``limit`` concurrent chat calls per account (429 above) and answers each
after L seconds, so the account cannot do better than limit / L calls per second. Two ``llm-worker``
processes with 16 task slots each and GIGACHAT_MAX_CONCURRENCY=32 work through N tasks; the limiter
(llm_worker/gigachat/limiter.py) has to find the limit on its own. For each limit this prints the
throughput (first RECEIVED to last COMPLETED), its ratio to the account's rate, the share of chat
calls answered 429 (from the emulator's call log), how busy the account was and how fast a freed place
was taken again (bench/account_calls.py), and the cap over time (sampled from the limiter's ``cap`` file
every 0.25 s; ``--plot`` draws it). Goal (issue 11 item 5): ratio >= 0.9 with <= 2 % of calls answered
429. bench/account_direct.py measures the cap without the rest of the pipeline.

Runs a private stack (Kafka, S3 server, emulator) on free ports in a temporary folder, stops it at the
end::

    python bench/account_limit.py [--limits 1,4,10] [--tasks 200] [--latency 0.3] [--plot caps.png]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from bench.account_calls import account_use
from bench.account_plot import plot_caps
from devstack.paths import cache_dir
from devstack.stack import Stack, StackPorts
from llm_worker.gigachat.limiter import read_cap

WORKERS = 2
SLOTS = 16
MAX_CONCURRENCY = 32
CHAT = "/api/v1/chat/completions"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="1,4,10", help="emulator concurrency limits to measure")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.3, help="emulator latency per call, seconds")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--plot", type=Path, help="write the cap over time of each limit to this PNG")
    return parser.parse_args()


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def _worker_env(stack: Stack, run: str, limiter_dir: Path) -> dict[str, str]:
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
            "WORKER_MAX_CONCURRENT_TASKS": str(SLOTS),
            "GIGACHAT_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
            "GIGACHAT_LIMITER_DIR": str(limiter_dir),
            "LOG_LEVEL": "INFO",
        }
    )
    return env


def _send(stack: Stack, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=10)
    for i in range(count):
        task_id = f"acct-{i:05d}"
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


class CapSampler(threading.Thread):
    """Reads the limiter's cap file every 0.25 s: (seconds since start, cap, ceiling)."""

    def __init__(self, limiter_dir: Path) -> None:
        super().__init__(daemon=True)
        self.limiter_dir = limiter_dir
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self.started_wall = time.time()

    def run(self) -> None:
        start = time.monotonic()
        self.started_wall = time.time()
        while not self.stop.wait(0.25):
            self._sample(start, only_changes=True)
        self._sample(start, only_changes=False)  # where it ended, for the plot

    def _sample(self, start: float, *, only_changes: bool) -> None:
        for directory in self.limiter_dir.glob("*"):
            record = read_cap(directory)
            if record is None:
                continue
            if not only_changes or not self.samples or self.samples[-1][1:] != (record.cap, record.ceiling):
                self.samples.append((round(time.monotonic() - start, 2), record.cap, record.ceiling))


def _measure(stack: Stack, args: argparse.Namespace, workdir: Path, limit: int) -> dict[str, Any]:
    run = f"acct-{uuid.uuid4().hex[:8]}"
    for name, partitions in (("tasks", 8), ("status", 3), ("dlq", 3)):
        stack.create_topic(f"{run}-{name}", partitions)
    emulator = stack.emulator_url
    requests.post(f"{emulator}/_emulator/reset", timeout=10).raise_for_status()
    requests.post(
        f"{emulator}/_emulator/config",
        json={"latency": args.latency, "latency_per_token": 0, "error_rate": 0, "max_concurrency": limit},
        timeout=10,
    ).raise_for_status()
    _send(stack, f"{run}-tasks", args.tasks)
    limiter_dir = workdir / f"limiter-{limit}"
    sampler = CapSampler(limiter_dir)
    sampler.start()
    workers = []
    for index in range(WORKERS):
        log = (workdir / f"worker-{limit}-{index}.log").open("wb")
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "llm_worker"],
                env=_worker_env(stack, run, limiter_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        events = _collect(stack, f"{run}-status", args.tasks, args.timeout)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        sampler.stop.set()
    calls = requests.get(f"{emulator}/_emulator/calls", timeout=60).json()["calls"]
    chat_calls = [c for c in calls if c["endpoint"] == CHAT]
    summary = _summary(args, limit, events, chat_calls, sampler.samples)
    summary["steady"] = _steady(args, limit, events, sampler)
    return summary


def _steady(args: argparse.Namespace, limit: int, events: list[dict[str, Any]], sampler: CapSampler) -> Any:
    """Throughput after the cap's last change (the search over), against the account's rate."""
    changes = [s for i, s in enumerate(sampler.samples) if i == 0 or s[1:] != sampler.samples[i - 1][1:]]
    if not changes:
        return None
    settled = sampler.started_wall + changes[-1][0]
    done = sorted(_ts(e) for e in events if e["status"] == 3 and _ts(e) > settled)
    if len(done) < 2:
        return None
    rate = (len(done) - 1) / (done[-1] - done[0])
    return {
        "from_s": changes[-1][0],
        "tasks": len(done),
        "ratio": round(rate / (limit / args.latency), 3),
    }


def _summary(
    args: argparse.Namespace,
    limit: int,
    events: list[dict[str, Any]],
    chat_calls: list[dict[str, Any]],
    caps: list[tuple[float, int, int]],
) -> dict[str, Any]:
    received = [_ts(e) for e in events if e["status"] == 1]
    finals = {e["task_id"]: e for e in events if e["status"] in (3, 4)}
    completed = [e for e in finals.values() if e["status"] == 3]
    elapsed = max(_ts(e) for e in finals.values()) - min(received) if finals else float("nan")
    account_rate = limit / args.latency
    throughput = len(completed) / elapsed if elapsed > 0 else 0.0
    refused = sum(1 for c in chat_calls if c["status"] == 429)
    return {
        "limit": limit,
        "tasks": args.tasks,
        "completed": len(completed),
        "failed": len(finals) - len(completed),
        "latency_s": args.latency,
        "account_rate_per_s": round(account_rate, 2),
        "elapsed_s": round(elapsed, 2),
        "throughput_tasks_per_s": round(throughput, 2),
        "ratio_to_account_rate": round(throughput / account_rate, 3),
        "chat_calls": len(chat_calls),
        "answered_429": refused,
        "share_429": round(refused / max(1, len(chat_calls)), 4),
        **account_use(chat_calls, limit),
        "cap_over_time": [{"t_s": t, "cap": cap, "ceiling": ceiling} for t, cap, ceiling in caps],
    }


def main() -> int:
    args = _parse()
    results = []
    with tempfile.TemporaryDirectory(prefix="llm-bench-acct-") as tmp:
        workdir = Path(tmp)
        stack = Stack(cache=cache_dir(), state_dir=workdir / "stack", ports=StackPorts.free())
        try:
            stack.up()
            for limit in (int(x) for x in args.limits.split(",")):
                results.append(_measure(stack, args, workdir, limit))
        finally:
            stack.down()
    print(json.dumps({"goal": {"ratio": 0.9, "share_429": 0.02}, "runs": results}, indent=2))
    if args.plot:
        plot_caps(results, args.plot, "llm-service: the host-wide call cap finding the account's limit")
    return 0 if all(r["failed"] == 0 and r["completed"] == args.tasks for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
