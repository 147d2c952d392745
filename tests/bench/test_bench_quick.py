"""The short version of ``make bench`` on the real stack: every system at one point, one kill -9, one
SIGHUP rolling replace, and the page with its plots. It checks the shape and the sanity of the output
(every task completed, ratios in range, every field present), never timed thresholds: the benchmark
must not rot, and its figures are only meaningful on an idle machine.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench import run as bench_run
from devstack.stack import Stack

pytestmark = pytest.mark.stack

RUN_FIELDS = {
    "system",
    "latency_s",
    "concurrency",
    "limit_tasks_per_s",
    "tasks",
    "completed",
    "failed",
    "elapsed_s",
    "throughput_tasks_per_s",
    "ratio_to_limit",
    "latency_p50_s",
    "latency_p99_s",
    "cpu_ms_per_task",
    "own_cpu_ms_per_task",
    "all_cpu_ms_per_task",
    "processes",
}
SYSTEMS = {report.SERVICE_1, report.SERVICE_2, report.THREAD_POOL, report.ONE_AT_A_TIME}


@pytest.fixture(scope="module")
def quick(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench-out")
    args = bench_run.parse(["--quick", "--out", str(out)])
    # A short folder: the supervisor's Unix socket lives in it (sun_path holds 107 bytes).
    with tempfile.TemporaryDirectory(prefix="lb-") as work:
        document = bench_run.collect(stack, args, Path(work))
    report.write(document, out)
    return document, out


def _check_run(row: dict[str, Any]) -> None:
    assert row.keys() >= RUN_FIELDS, RUN_FIELDS - row.keys()
    assert row["completed"] == row["tasks"] > 0 and row["failed"] == 0, row
    assert 0 < row["ratio_to_limit"] <= 1.2, row
    assert 0 < row["latency_p50_s"] <= row["latency_p99_s"], row
    # No task can finish faster than the model's latency.
    assert row["latency_p50_s"] >= 0.9 * row["latency_s"], row
    own = {"supervisor", "worker"} if row["system"].startswith("llm-service") else {"peer"}
    assert own | {"broker", "s3", "emulator"} == row["processes"].keys(), row["processes"]
    # The processes that run tasks must show CPU; an idle supervisor may spend less than the clock
    # tick over a short run (0.0 ms per task), so it is only checked to be measured at all.
    working = own - {"supervisor"}
    assert all(row["cpu_ms_per_task"][k] > 0 for k in working), row["cpu_ms_per_task"]
    assert all(row["cpu_ms_per_task"][k] >= 0 for k in own), row["cpu_ms_per_task"]
    assert all(row["processes"][k]["rss_mb"] > 0 for k in own), row["processes"]
    assert row["all_cpu_ms_per_task"] >= row["own_cpu_ms_per_task"] > 0, row


def test_every_system_completes_every_task_with_every_figure(quick: tuple[dict[str, Any], Path]) -> None:
    document, _ = quick
    assert {r["system"] for r in document["runs"]} == SYSTEMS
    for row in document["runs"]:
        _check_run(row)


def test_kill_and_rolling_replace_lose_nothing(quick: tuple[dict[str, Any], Path]) -> None:
    document, _ = quick
    restart, roll = document["restart"], document["rolling"]
    assert restart["kills"] == 1 and restart["lost"] == 0 and restart["failed"] == 0, restart
    assert restart["respawn_median_ms"] > 0 and restart["resume_median_s"] > 0, restart
    assert roll["lost"] == 0 and roll["failed"] == 0 and roll["replace_s"] > 0, roll
    assert roll["throughput_before_tasks_per_s"] > 0 and roll["timeline_tasks_per_s"], roll
    assert roll["hup_at_s"] < roll["replaced_at_s"], roll


def test_goals_name_the_supervisor_and_the_whole_service(quick: tuple[dict[str, Any], Path]) -> None:
    document, _ = quick
    names = [g["name"] for g in document["goals"]]
    assert any(n.startswith("supervisor CPU, % of one core") for n in names), names
    assert sum(n.startswith("whole service CPU per task") for n in names) == 2, names
    assert sum(n.startswith("throughput / (C/L)") for n in names) == 2, names
    for goal in document["goals"]:
        assert {"value", "goal", "at_most", "met"} <= goal.keys() and isinstance(goal["met"], bool), goal


def test_page_json_and_plots_are_written(quick: tuple[dict[str, Any], Path]) -> None:
    document, out = quick
    page = (out / "performance.md").read_text()
    assert json.loads((out / "performance" / "results.json").read_text()) == document
    for name in ("throughput", "latency", "cpu", "rolling"):
        png = out / "performance" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"(performance/{name}.png)" in page
    for system in SYSTEMS:
        assert system in page
    for heading in ("## Goals", "## kill -9 of a worker", "## SIGHUP rolling replace"):
        assert heading in page
