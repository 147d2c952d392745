"""Throughput while SIGHUP replaces the workers one at a time (in-flight tasks finish first).

``llm-supervisor`` with 2 workers and C tasks in flight works through a backlog that is kept topped up;
once it has run steadily for ``steady_s``, the supervisor gets SIGHUP; the replacement is over when
both slots run new processes. Throughput (COMPLETED statuses per second) is reported before, during
and after the replacement, with a per-second timeline for the plot, and every task sent must end with
exactly one final status.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from bench.common import INPUT_BUCKET, event_ts, fresh_names, own_dir, service_env
from bench.systems import Point, Run
from tests.supervisor.harness import Supervisor
from tests.worker.harness import Names, StatusLog, task_bytes

WORKERS = 2
CHANGED = "TASK_RETRY_BACKOFF_MAX_S"  # a worker setting no task of the run depends on (no retries)


class Feeder:
    """Keeps ``backlog`` tasks waiting beyond what has finished, until told to stop."""

    def __init__(self, *, run: Run, names: Names, backlog: int) -> None:
        self._producer = KafkaProducer(bootstrap_servers=run.stack.kafka_bootstrap, linger_ms=10)
        self._topic = names.tasks
        self._inputs = run.inputs
        self._backlog = backlog
        self.ids: list[str] = []

    def top_up(self, finished: int) -> None:
        while len(self.ids) - finished < self._backlog:
            task_id = f"roll-{len(self.ids):06d}"
            ref = {"bucket": INPUT_BUCKET, "key": self._inputs[len(self.ids) % len(self._inputs)]}
            body = task_bytes(task_id, prompt="Summarise the document in one line", input=ref)
            self._producer.send(self._topic, key=task_id.encode(), value=body)
            self.ids.append(task_id)
        self._producer.flush(timeout=60)

    def close(self) -> None:
        self._producer.close(timeout=10)


def measure(run: Run, point: Point, *, steady_s: float) -> dict[str, Any]:
    names = fresh_names(run.stack, "roll")
    folder = own_dir(run.tmp, names)
    env = service_env(
        run.stack,
        names,
        folder,
        WORKER_PROCESSES=str(WORKERS),
        WORKER_MAX_CONCURRENT_TASKS=str(max(1, point.concurrency // WORKERS)),
        GIGACHAT_MAX_CONCURRENCY=str(point.concurrency),
    )
    # SIGHUP replaces the workers only when a worker setting changed: the run edits this file first,
    # as an operator edits .env (the environment wins over the file, so the setting leaves it).
    env_file = folder / "service.env"
    env_file.write_text(f"{CHANGED}={env.pop(CHANGED)}\n")
    sup = Supervisor(env=env, tmp_path=folder, fake=False, env_file=env_file, name="sup")
    status_log = StatusLog(run.stack.kafka_bootstrap, names.status)
    feeder = Feeder(run=run, names=names, backlog=4 * point.concurrency)
    try:
        old = {w["pid"] for w in sup.running(WORKERS, timeout=180)}
        marks = _phases(sup, status_log, feeder=feeder, old=old, steady_s=steady_s, env_file=env_file)
        finals = status_log.wait_finals(feeder.ids, timeout=300)
    except AssertionError:
        sys.stderr.write(sup.log_text()[-6000:])
        raise
    finally:
        feeder.close()
        sup.stop(timeout=60)
        status_log.close()
    return _report(point, marks, feeder.ids, finals, status_log.events())


class Finals:
    """Counts tasks with a final status, decoding each status record once (the log grows to thousands)."""

    def __init__(self, status_log: StatusLog) -> None:
        self._log = status_log
        self._seen = 0
        self._tasks: set[str] = set()

    def __call__(self) -> int:
        records = self._log.read(0.1)
        for record in records[self._seen :]:
            event = json.loads(record.value)
            if event["status"] in (3, 4):
                self._tasks.add(event["task_id"])
        self._seen = len(records)
        return len(self._tasks)


def _phases(
    sup: Supervisor, status_log: StatusLog, *, feeder: Feeder, old: set[int], steady_s: float, env_file: Path
) -> dict[str, float]:
    """Feed tasks through steady state, SIGHUP, the replacement and as long again after it."""
    finished = Finals(status_log)
    feeder.top_up(0)
    deadline = time.monotonic() + 600
    while finished() == 0:
        _check(deadline, "the first final status")
    started = time.time()
    while time.time() - started < steady_s:
        feeder.top_up(finished())
    env_file.write_text(f"{CHANGED}=3\n")
    hup = time.time()
    sup.signal(signal.SIGHUP)
    while not _replaced(sup, old):
        feeder.top_up(finished())
        _check(deadline, "both workers replaced after SIGHUP")
    replaced = time.time()
    while time.time() - replaced < steady_s:
        feeder.top_up(finished())
    return {"start": started, "hup": hup, "replaced": replaced, "end": time.time()}


def _check(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise AssertionError(f"timed out waiting for {what}")


def _replaced(sup: Supervisor, old: set[int]) -> bool:
    rows = sup.workers()
    return len(rows) == WORKERS and all(w["state"] == "RUNNING" and w["pid"] not in old for w in rows)


def _rate(times: list[float], start: float, end: float) -> float:
    inside = sum(1 for t in times if start <= t < end)
    return round(inside / (end - start), 3) if end > start else 0.0


def _report(
    point: Point,
    marks: dict[str, float],
    ids: list[str],
    finals: dict[str, list[dict[str, Any]]],
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    done = [event_ts(e) for e in events if e["status"] == 3]
    first = marks["start"]
    timeline = Counter(int(t - first) for t in done if first <= t < marks["end"])
    return {
        "workers": WORKERS,
        "latency_s": point.latency_s,
        "concurrency": point.concurrency,
        "limit_tasks_per_s": round(point.limit, 3),
        "replace_s": round(marks["replaced"] - marks["hup"], 3),
        "throughput_before_tasks_per_s": _rate(done, first, marks["hup"]),
        "throughput_during_tasks_per_s": _rate(done, marks["hup"], marks["replaced"]),
        "throughput_after_tasks_per_s": _rate(done, marks["replaced"], marks["end"]),
        "tasks": len(ids),
        "lost": len(set(ids) - finals.keys()),
        "failed": sum(1 for evs in finals.values() for e in evs if e["status"] != 3),
        "duplicate_finals": sum(1 for evs in finals.values() if len(evs) > 1),
        "hup_at_s": round(marks["hup"] - first, 3),
        "replaced_at_s": round(marks["replaced"] - first, 3),
        "timeline_tasks_per_s": [timeline.get(s, 0) for s in range(int(marks["end"] - first))],
    }
