"""Worker throughput against its limit C / L, and CPU time per task, at one point. Prints JSON.

``llm-supervisor`` with one worker (WORKER_MAX_CONCURRENT_TASKS = GIGACHAT_MAX_CONCURRENCY = C) works
through N tasks while the GigaChat emulator answers every call after L seconds; the measurement is
bench/systems.py's, the one ``make bench`` (bench/run.py) makes at every point of its grid. No worker
can beat C / L tasks per second; the ratio to it shows what the consume -> S3 -> model -> S3 -> status ->
commit path costs around the model call. ``cpu_ms_per_task`` is the worker process's own CPU time per
task; ``cpu_ms_per_task_by_process`` has every process of the system.

    python bench/worker_throughput.py [--tasks 640] [--concurrency 64] [--latency 1.0] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import systems
from bench.common import private_stack, scripts_on_path, seed_inputs
from tests.worker.harness import EmulatorControl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=1.0, help="emulator latency per call, seconds")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    scripts_on_path()
    point = systems.Point(latency_s=args.latency, concurrency=args.concurrency, tasks=args.tasks)
    with tempfile.TemporaryDirectory(prefix="llm-bench-") as tmp, private_stack(Path(tmp)) as stack:
        EmulatorControl(stack.emulator_url).config(
            latency=args.latency, latency_per_token=0, error_rate=0, max_concurrency=0
        )
        run = systems.Run(stack=stack, inputs=seed_inputs(stack), tmp=Path(tmp))
        row = systems.service(run, point, workers=args.workers)
    result = {
        **{k: v for k, v in row.items() if k not in ("cpu_ms_per_task", "processes")},
        "cpu_ms_per_task": row["cpu_ms_per_task"]["worker"],
        "cpu_ms_per_task_by_process": row["cpu_ms_per_task"],
        "goal_ratio": 0.95,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["failed"] == 0 and result["completed"] == args.tasks else 1


if __name__ == "__main__":
    raise SystemExit(main())
