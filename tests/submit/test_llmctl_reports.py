"""``llmctl lag``, ``llmctl stats`` and ``llmctl audit`` against a real worker on the real stack.

The runbook's weekly statistics and integrity check: tasks are run (some completing, some failing),
then the commands must print the right figures; then the integrity is broken on purpose (a result
object deleted, a second final status published) and the audit must say so.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from llmctl.audit import find_problems
from llmctl.stats import summarize
from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import run_llmctl, send, task_bytes

GOOD, BAD_INPUT, BAD_PARAM = 5, 2, 1


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.mark.stack
def test_lag_counts_unprocessed_tasks_per_partition(bed: Testbed) -> None:
    names = bed.create(partitions=2)
    env = bed.env()
    for i in range(3):
        send(bed.producer, names.tasks, task_bytes(f"lag-{i}", prompt="hi"), key=f"lag-{i}".encode())
    lag = _json(run_llmctl(env, "lag", "--json"))
    assert lag["lag_messages"] == 3 and [p["partition"] for p in lag["partitions"]] == [0, 1]
    assert sum(p["lag_messages"] for p in lag["partitions"]) == 3
    assert 0 <= lag["lag_s"] < 120
    human = run_llmctl(env, "lag")
    assert (
        human.returncode == 0 and f"group {names.group} on {names.tasks}: 3 messages behind" in human.stdout
    )
    bed.start_worker(env).started()
    status = bed.status_log()
    status.wait_finals([f"lag-{i}" for i in range(3)], timeout=120)

    def caught_up() -> bool:
        return bool(_json(run_llmctl(env, "lag", "--json"))["lag_messages"] == 0)

    wait_until(caught_up, timeout=60, what="lag back to 0 after the commits")


@pytest.mark.stack
def test_stats_and_audit_on_real_tasks_then_a_broken_history(bed: Testbed) -> None:
    env, names = bed.env(), bed.names
    bed.start_worker(env).started()
    ids = _run_mixed_tasks(bed)
    finals = bed.status_log().wait_finals(ids, timeout=180)

    figures = _json(run_llmctl(env, "stats", "--since", "1h", "--json"))
    assert figures["tasks"] == len(ids)
    assert figures["by_status"] == {"COMPLETED": GOOD, "FAILED": BAD_INPUT + BAD_PARAM, "NO_FINAL_STATUS": 0}
    assert figures["top_errors"] == {"INPUT_NOT_FOUND": BAD_INPUT, "INVALID_TASK": BAD_PARAM}
    tokens = sum(f[0].get("tokens_used") or 0 for f in finals.values())
    assert figures["tokens_used"] == tokens > 0
    completed_ms = [f[0]["processing_ms"] for f in finals.values() if f[0]["status"] == 3]
    assert figures["processing_ms"]["count"] == GOOD
    assert figures["processing_ms"]["avg"] == pytest.approx(sum(completed_ms) / GOOD, abs=0.1)
    human = run_llmctl(env, "stats", "--since", "7d")
    assert human.returncode == 0 and f"{len(ids)} tasks" in human.stdout and "INPUT_NOT_FOUND" in human.stdout

    clean = run_llmctl(env, "audit", "--since", "1h")
    assert (clean.returncode, clean.stdout) == (0, ""), clean.stdout + clean.stderr
    assert f"audit ok: {len(ids)} tasks" in clean.stderr

    victim = finals["good-0"][0]["result"]
    bed.s3.remove_object(victim["bucket"], victim["key"])
    twice = finals["good-1"][0]
    send(
        bed.producer,
        names.status,
        json.dumps({**twice, "ts": "2026-01-01T00:00:00.000Z"}).encode(),
        b"good-1",
    )
    broken = run_llmctl(env, "audit", "--since", "1h")
    assert broken.returncode == 1, broken.stderr
    assert broken.stdout.splitlines() == [
        f"good-0: COMPLETED but result object {victim['bucket']}/{victim['key']} is missing",
        "good-1: 2 final statuses (COMPLETED, COMPLETED)",
    ]


def _run_mixed_tasks(bed: Testbed) -> list[str]:
    names = bed.names
    ids = []
    for i in range(GOOD):
        ids.append(f"good-{i}")
        send(bed.producer, names.tasks, task_bytes(f"good-{i}", prompt=f"Task {i}"), f"good-{i}".encode())
    for i in range(BAD_INPUT):
        ids.append(f"noinput-{i}")
        missing = {"bucket": "llm-input", "key": f"{names.prefix}missing-{i}.txt"}
        send(
            bed.producer, names.tasks, task_bytes(f"noinput-{i}", prompt="x", input=missing), ids[-1].encode()
        )
    for i in range(BAD_PARAM):
        ids.append(f"badparam-{i}")
        bad = task_bytes(f"badparam-{i}", prompt="x", params={"max_token": 5})
        send(bed.producer, names.tasks, bad, ids[-1].encode())
    return ids


def test_summarize_counts_each_task_once_by_its_first_final_status() -> None:
    events = [
        {"task_id": "a", "status": 1},
        {"task_id": "a", "status": 3, "processing_ms": 100.0, "tokens_used": 10},
        {"task_id": "a", "status": 4, "error": {"code": "LATE"}},
        {"task_id": "b", "status": 4, "processing_ms": 300.0, "error": {"code": "X"}},
        {"task_id": "c", "status": 2},
    ] + [{"task_id": f"t{i}", "status": 3, "processing_ms": float(i), "tokens_used": 1} for i in range(1, 21)]
    figures = summarize(events)
    assert figures["tasks"] == 23
    assert figures["by_status"] == {"COMPLETED": 21, "FAILED": 1, "NO_FINAL_STATUS": 1}
    assert figures["top_errors"] == {"X": 1}
    assert figures["tokens_used"] == 30
    assert figures["processing_ms"]["count"] == 21  # completed tasks only
    assert figures["processing_ms"]["p95"] == 20.0  # nearest rank: the 20th of 21 sorted values


def test_find_problems_reports_unfinished_tasks_only_after_the_grace() -> None:
    now = float(int(time.time()))  # whole seconds, as the status timestamps are read here
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 3600))
    new = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 10))
    events = [
        {"task_id": "stuck", "status": 2, "ts": old},
        {"task_id": "running", "status": 1, "ts": new},
        {"task_id": "noref", "status": 3, "ts": new},
        {"task_id": "ok", "status": 3, "ts": new, "result": {"bucket": "b", "key": "k"}},
    ]
    problems = find_problems(events, exists=lambda b, k: True, now=now, grace_s=600)
    assert problems == [
        "noref: COMPLETED without a result reference",
        "stuck: no final status (last PROCESSING, 3600 s ago)",
    ]
