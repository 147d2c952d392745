"""``make bench``: llm-service against the hand-written loops, side by side, in one run on one stack.

``python -m bench.run [--quick] [--out docs] [--seconds 20]`` starts one private local stack (real
Kafka, S3 server, GigaChat emulator), then for every model latency L and concurrency C of the grid runs

* ``llm-supervisor`` with 1 worker and with 2 workers (C split between them),
* the thread-pool loop of bench/peers/ with C threads and auto-commit,
* the one-at-a-time loop, once per L (it has no C; at L = 5 s it does 0.2 tasks/s, so its task count
  is capped by time),

each with the same work per task (S3 input -> model -> S3 result -> status events), then kill -9 of a
worker (replacement, partitions consumed again) and a SIGHUP rolling replace under load. It writes
``<out>/performance/results.json``, the plots ``<out>/performance/*.png`` and ``<out>/performance.md``
(bench/report.py). Each point runs about ``--seconds`` worth of tasks at the lower of C / L and what a
2-core machine can do (60 tasks/s), in whole waves of C and at least two.

``--quick`` is one point (L = 0.2 s, C = 8, 50 tasks), one kill and a short rolling replace: the shape of
the output in about two minutes; ``make test`` runs it (tests/bench/test_bench_quick.py) so the
benchmark cannot rot.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, restart_latency, rolling, systems
from bench.common import private_stack, scripts_on_path, seed_inputs
from bench.systems import Point, Run
from devstack.stack import Stack
from tests.worker.harness import EmulatorControl

LATENCIES = (0.2, 1.0, 5.0)
CONCURRENCIES = (8, 64, 256)
MACHINE_TASKS_PER_S = 60.0  # what one 2-core machine can do at best: sizes the runs, not a goal
HEADLINE = (1.0, 64)  # the point: L = 1 s, C = 64


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one point and short runs (make test)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder of performance.md")
    parser.add_argument("--seconds", type=float, default=20.0, help="about how long each point runs")
    parser.add_argument("--kills", type=int, default=5, help="kill -9 measurements")
    return parser.parse_args(argv)


def grid(args: argparse.Namespace) -> list[Point]:
    if args.quick:
        return [Point(latency_s=0.2, concurrency=8, tasks=50)]
    points = []
    for latency in LATENCIES:
        for c in CONCURRENCIES:
            reachable = min(c / latency, MACHINE_TASKS_PER_S)
            # Whole waves of C: throughput runs from the first task's start to the last one's end, so a
            # last wave part-full would count as idle places (360 tasks at C = 64, L = 1 s: 0.94 at best).
            waves = max(2, math.ceil(reachable * args.seconds / c))
            points.append(Point(latency_s=latency, concurrency=c, tasks=waves * c))
    return points


def _one_at_a_time_point(latency: float, args: argparse.Namespace) -> Point:
    tasks = 10 if args.quick else max(3, int(args.seconds / latency))
    return Point(latency_s=latency, concurrency=1, tasks=tasks)


def _progress(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {text}", file=sys.stderr, flush=True)


def measure_grid(run: Run, emulator: EmulatorControl, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    done_latencies: set[float] = set()
    for point in grid(args):
        emulator.config(latency=point.latency_s, latency_per_token=0, error_rate=0, max_concurrency=0)
        runs: list[Callable[[], dict[str, Any]]] = [
            functools.partial(systems.service, run, point, workers=1),
            functools.partial(systems.service, run, point, workers=2),
            functools.partial(systems.peer, run, point, "thread-pool"),
        ]
        if point.latency_s not in done_latencies:
            done_latencies.add(point.latency_s)
            solo = _one_at_a_time_point(point.latency_s, args)
            runs.append(functools.partial(systems.peer, run, solo, "one-at-a-time"))
        for measure in runs:
            row = measure()
            _progress(
                f"L={row['latency_s']} C={row['concurrency']} {row['system']}: "
                f"{row['throughput_tasks_per_s']} tasks/s ({row['ratio_to_limit']} of C/L), "
                f"{row['all_cpu_ms_per_task']} ms CPU/task"
            )
            rows.append(row)
    return rows


def collect(stack: Stack, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Every measurement on ``stack``, then the goals: the whole JSON document."""
    started, load = time.time(), os.getloadavg()
    scripts_on_path()
    run = Run(stack=stack, inputs=seed_inputs(stack), tmp=tmp)
    emulator = EmulatorControl(stack.emulator_url)
    try:
        rows = measure_grid(run, emulator, args)
        _progress("kill -9 of a worker")
        restart = restart_latency.measure(stack, 1 if args.quick else args.kills, tmp)
        roll_point = Point(latency_s=0.2, concurrency=8, tasks=0) if args.quick else Point(1.0, 64, 0)
        emulator.config(latency=roll_point.latency_s, latency_per_token=0, error_rate=0, max_concurrency=0)
        _progress("SIGHUP rolling replace")
        roll = rolling.measure(run, roll_point, steady_s=3.0 if args.quick else 10.0)
    finally:
        emulator.restore()
    document = {
        "machine": _machine(started, load),
        "settings": {"quick": args.quick, "seconds_per_point": args.seconds, "headline": list(HEADLINE)},
        "runs": rows,
        "restart": restart,
        "rolling": roll,
    }
    document["goals"] = report.goals(document)
    return document


def _machine(started: float, load: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in load],
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
    }


def complete(document: dict[str, Any]) -> bool:
    """Every task of every run ended COMPLETED, and none was lost to kill -9 or SIGHUP."""
    done = all(r["completed"] == r["tasks"] for r in document["runs"])
    return done and document["restart"]["lost"] == 0 and document["rolling"]["lost"] == 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the stack and every process started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as tmp, private_stack(Path(tmp)) as stack:
        document = collect(stack, args, Path(tmp))
    path = report.write(document, args.out)
    _progress(f"wrote {path}")
    return 0 if complete(document) else 1


if __name__ == "__main__":
    raise SystemExit(main())
