"""The supervisor's own CPU, idle and under load (issue 9 item 1: <= 1 % of one core), side by side.

``python -m bench.supervisor_cpu [--seconds 30] [--rounds 2] [--code before=/tmp/old-tree ...]``
starts one private local stack, then for each code tree (default: this repository) and each round:

* **idle**: ``llm-supervisor`` with 2 real workers and nothing to do, for ``--seconds``;
* **load**: the same with C = 64 tasks in flight (32 per worker) at model latency L = 1 s, a steady
  stream of tasks (the limit C / L is 64 tasks/s) and a status client asking once a second;

and prints the supervisor process's CPU seconds over each fixed window as a percentage of one core,
with the tasks finished in the window. Trees alternate within a round, so a before/after comparison
shares the machine's load of the moment. A tree is a checkout of this repository (``git archive``
of an older commit will do): the supervisor and its workers run its code through PYTHONPATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    fresh_names,
    own_dir,
    private_stack,
    scripts_on_path,
    seed_inputs,
    service_env,
    submit,
)
from bench.systems import _status_client
from devstack.stack import Stack
from tests.supervisor import harness
from tests.worker.harness import EmulatorControl

WORKERS = 2
CONCURRENCY = 64
LATENCY_S = 1.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each measured window")
    parser.add_argument("--rounds", type=int, default=2, help="times each tree is measured")
    parser.add_argument(
        "--code", action="append", default=[], metavar="NAME=DIR", help="a code tree to measure (repeatable)"
    )
    return parser.parse_args(argv)


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def one_window(
    stack: Stack, inputs: list[str], tmp: Path, code: Path, *, load: bool, seconds: float
) -> dict[str, Any]:
    names = fresh_names(stack, "supcpu")
    env = service_env(
        stack,
        names,
        own_dir(tmp, names),
        WORKER_PROCESSES=str(WORKERS),
        WORKER_MAX_CONCURRENT_TASKS=str(CONCURRENCY // WORKERS),
        GIGACHAT_MAX_CONCURRENCY=str(CONCURRENCY),
    )
    harness.REPO = code  # the harness puts REPO on the supervisor's PYTHONPATH
    sup = harness.Supervisor(env=env, tmp_path=own_dir(tmp, names), fake=False, name="sup")
    try:
        sup.running(WORKERS, timeout=180)
        if load:
            # Enough tasks for the window at the limit and a margin; the rest is dropped with the topic.
            submit(stack, names.tasks, int(CONCURRENCY / LATENCY_S * (seconds + 20)), inputs)
            deadline = time.monotonic() + 120
            while _done(sup) < 2 * CONCURRENCY and time.monotonic() < deadline:
                time.sleep(0.5)  # a bench warming up, not a test synchronising
        with _status_client(sup) if load else contextlib.nullcontext():
            done0, cpu0, t0 = _done(sup), cpu_s(sup.proc.pid), time.monotonic()
            time.sleep(seconds)  # the measured window
            done1, cpu1, t1 = _done(sup), cpu_s(sup.proc.pid), time.monotonic()
    finally:
        sup.stop(timeout=60)
    wall = t1 - t0
    return {
        "cpu_s": round(cpu1 - cpu0, 3),
        "wall_s": round(wall, 1),
        "core_percent": round(100 * (cpu1 - cpu0) / wall, 3),
        "tasks_per_s": round((done1 - done0) / wall, 1),
    }


def _done(sup: harness.Supervisor) -> int:
    reply = sup.ask("status")
    return int(reply["totals"]["done"])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    trees = [tuple(c.split("=", 1)) for c in args.code] or [("this", str(harness.REPO))]
    scripts_on_path()
    rows = []
    with tempfile.TemporaryDirectory(prefix="llm-supcpu-") as tmp, private_stack(Path(tmp)) as stack:
        inputs = seed_inputs(stack)
        emulator = EmulatorControl(stack.emulator_url)
        emulator.config(latency=LATENCY_S, latency_per_token=0, error_rate=0, max_concurrency=0)
        try:
            for round_no in range(args.rounds):
                for load in (False, True):
                    for name, path in trees:
                        row = one_window(
                            stack, inputs, Path(tmp), Path(path), load=load, seconds=args.seconds
                        )
                        row.update(tree=name, round=round_no, phase="load" if load else "idle")
                        print(json.dumps(row), flush=True)
                        rows.append(row)
        finally:
            emulator.restore()
    for phase in ("idle", "load"):
        for name, _ in trees:
            mine = [r for r in rows if r["tree"] == name and r["phase"] == phase]
            cpu, wall = sum(r["cpu_s"] for r in mine), sum(r["wall_s"] for r in mine)
            print(
                f"{phase:4} {name:8}: {cpu:.2f} s CPU in {wall:.0f} s = {100 * cpu / wall:.2f} % of a core",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
