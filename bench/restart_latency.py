"""How fast the supervisor heals a worker killed with SIGKILL under load; prints one JSON object.

``python -m bench.restart_latency [--kills 20]``, from the repo root, starts a private local stack
(real Kafka, S3, the GigaChat emulator), runs ``llm-supervisor`` with 2 real workers on a
4-partition topic, keeps a backlog of tasks, and kills slot 1's worker ``--kills`` times. Per kill:

* ``respawn``: until the supervisor's status shows a new pid in the slot (the anchor: Gunicorn forks a
  replacement in about 6 ms);
* ``resume``: until the new worker sends its first RECEIVED status, i.e. its partitions are consumed
  again (the anchor: a dynamic Kafka member would wait out the 45 s default session timeout; static
  membership hands the slot's partitions straight to the new process with the same group.instance.id).

At the end every submitted task must have exactly one final COMPLETED status (``lost`` and ``failed``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from bench.common import fresh_names, own_dir, private_stack, scripts_on_path, service_env
from devstack.stack import Stack
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, Names, StatusLog, task_bytes


def run(kills: int, tmp: Path) -> dict[str, Any]:
    with private_stack(tmp) as stack:
        return measure(stack, kills, tmp)


def measure(stack: Stack, kills: int, tmp: Path) -> dict[str, Any]:
    """``kills`` SIGKILLs of slot 1's worker on ``stack``; the emulator's configuration is restored."""
    names = fresh_names(stack, "restart", partitions=4)
    emulator = EmulatorControl(stack.emulator_url)
    emulator.config(latency=0.2)
    folder = own_dir(tmp, names)
    env = service_env(
        stack,
        names,
        folder,
        KAFKA_SESSION_TIMEOUT_MS="10000",
        WORKER_PROCESSES="2",
        WORKER_MAX_CONCURRENT_TASKS="4",
        WORKER_MIN_UPTIME_S="0.5",
        LOG_LEVEL="WARNING",
    )
    sup = Supervisor(env=env, tmp_path=folder, fake=False, name="bench")
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    status_log = StatusLog(stack.kafka_bootstrap, names.status)
    try:
        sup.running(2, timeout=90)
        ids = _submit(producer, names, 40 * kills * 4)
        respawn, resume = _kill_loop(sup, status_log, kills)
        finals = status_log.wait_finals(ids, timeout=600)
    except AssertionError:
        sys.stderr.write(sup.log_text()[-8000:])
        raise
    finally:
        sup.stop(timeout=60)
        producer.close(timeout=10)
        status_log.close()
        emulator.restore()
    return _report(respawn, resume, ids, finals)


def _submit(producer: KafkaProducer, names: Names, n: int) -> list[str]:
    ids = [f"bench-{i}" for i in range(n)]
    for task_id in ids:
        producer.send(names.tasks, key=task_id.encode(), value=task_bytes(task_id, prompt=f"say {task_id}"))
    producer.flush(timeout=60)
    return ids


def _kill_loop(sup: Supervisor, status_log: StatusLog, kills: int) -> tuple[list[float], list[float]]:
    respawn: list[float] = []
    resume: list[float] = []
    for _ in range(kills):
        victim = wait_until(lambda: _consuming(sup, status_log), timeout=60, what="slot 1 consuming")
        killed = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        new = wait_until(partial(_new_worker, sup, victim["pid"]), timeout=10, what="respawn", step=0.001)
        respawn.append(time.monotonic() - killed)
        wait_until(partial(_received_by, status_log, new["worker_id"]), timeout=60, what="resume", step=0)
        resume.append(time.monotonic() - killed)
        print(
            f"kill {len(resume)}: respawn {respawn[-1] * 1000:.1f} ms, resume {resume[-1]:.2f} s",
            file=sys.stderr,
        )
    return respawn, resume


def _consuming(sup: Supervisor, status_log: StatusLog) -> dict[str, Any] | None:
    row = next((w for w in sup.workers() if w["slot"] == 1 and w["state"] == "RUNNING"), None)
    # Up for WORKER_MIN_UPTIME_S first: killing sooner would count as a crash loop and back off.
    if row is None or row["uptime_s"] < 1.0:
        return None
    return row if _received_by(status_log, row["worker_id"]) else None


def _new_worker(sup: Supervisor, old_pid: int) -> dict[str, Any] | None:
    return next((w for w in sup.workers() if w["slot"] == 1 and w["pid"] not in (None, old_pid)), None)


def _received_by(status_log: StatusLog, worker_id: str) -> bool:
    status_log.read(0.02)
    return any(e["worker_id"] == worker_id for e in status_log.events()[-2000:])


def _report(
    respawn: list[float], resume: list[float], ids: list[str], finals: dict[str, Any]
) -> dict[str, Any]:
    return {
        "kills": len(respawn),
        "respawn_median_ms": round(statistics.median(respawn) * 1000, 1),
        "respawn_max_ms": round(max(respawn) * 1000, 1),
        "resume_median_s": round(statistics.median(resume), 3),
        "resume_max_s": round(max(resume), 3),
        "tasks": len(ids),
        "lost": len(set(ids) - finals.keys()),
        "failed": sum(1 for events in finals.values() for e in events if e["status"] != 3),
        "duplicate_finals": sum(1 for events in finals.values() if len(events) > 1),
        "anchors": {"gunicorn_fork_ms": 6, "kafka_default_session_timeout_s": 45},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args(argv)
    scripts_on_path()
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as tmp:
        result = run(args.kills, Path(tmp))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if result["lost"] == 0 and result["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
