"""The worker end to end on the real stack: 200 tasks in, 200 results out, one final status each,
the runbook's log lines, its average-time pipeline and a committed group with no lag."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
from pathlib import Path

import pytest
from kafka import KafkaProducer
from minio import Minio

from devstack.stack import Stack
from llm_service import exit_codes
from tests.kafka_groups import group_rows
from tests.worker.conftest import Testbed
from tests.worker.harness import Names, StatusLog, send, task_bytes

pytestmark = pytest.mark.stack

RUNBOOK_AVERAGE = (
    'grep "Task.*processed in" {log} | grep -o "[0-9.]*ms" '
    '| awk \'{{sum+=$1; count++}} END {{print "Average:", sum/count, "ms"}}\''
)
INPUTS = {
    "ru-utf8.txt": "Отчёт о продажах за квартал: рост выручки на 12%, расходы снизились.".encode(),
    "ru-cp1251.txt": "Протокол совещания. Решили перенести релиз на следующую неделю.".encode("cp1251"),
    "en.txt": b"Quarterly report: revenue grew by 12 percent while costs went down.",
}


def _upload_inputs(s3: Minio, prefix: str) -> list[dict[str, str]]:
    refs = []
    for name, data in INPUTS.items():
        key = f"{prefix}inputs/{name}"
        s3.put_object("llm-input", key, __import__("io").BytesIO(data), len(data))
        refs.append({"bucket": "llm-input", "key": key})
    return refs


def _send_tasks(producer: KafkaProducer, names: Names, refs: list[dict[str, str]], count: int) -> list[str]:
    ids = []
    for i in range(count):
        task_id = f"e2e-{i:03d}"
        if i % 3 == 0:
            value = task_bytes(
                task_id, prompt="Summarise the document", input=refs[i % len(refs)], metadata={"n": i}
            )
        elif i % 3 == 1:
            value = task_bytes(
                task_id,
                messages=[
                    {"role": "system", "content": "Be brief"},
                    {"role": "user", "content": f"Question number {i}"},
                ],
            )
        else:
            value = task_bytes(
                task_id, prompt=f"Say hello {i}", params={"temperature": 0.2, "max_tokens": 64}
            )
        send(producer, names.tasks, value, key=task_id.encode())
        ids.append(task_id)
    return ids


def test_200_tasks_each_complete_once(bed: Testbed) -> None:
    names, s3, status_log = bed.names, bed.s3, bed.status_log()
    ids = _send_tasks(bed.producer, names, _upload_inputs(s3, names.prefix), 200)
    env = bed.env(WORKER_MAX_CONCURRENT_TASKS="16", GIGACHAT_MAX_CONCURRENCY="16")
    worker = bed.start_worker(env).started()

    finals = status_log.wait_finals(ids, timeout=180)

    assert {t: [e["status"] for e in events] for t, events in finals.items() if len(events) != 1} == {}
    assert all(events[0]["status"] == 3 for events in finals.values())
    results = list(s3.list_objects("llm-output", prefix=names.prefix, recursive=True))
    assert len(results) == 200
    assert worker.stop() == exit_codes.OK
    _check_tokens_counted(Path(env["GIGACHAT_LIMITER_DIR"]), finals)
    _check_event_order(status_log)
    _check_result_object(s3, names, finals["e2e-000"][0])
    _check_log_lines(worker.log_text(), names)
    _check_runbook_average(worker.log_path, finals)
    _check_no_lag(bed.stack, names)


def _check_tokens_counted(limiter_dir: Path, finals: dict[str, list[dict[str, object]]]) -> None:
    """No budget set: the worker writes the day's tokens in batches (llm_worker/budget_gate.py);
    after a graceful stop the spend file holds every task's tokens, none twice."""
    files = list(limiter_dir.rglob("spend-*.json"))
    assert files
    counted = sum(json.loads(f.read_bytes())["pool"] for f in files)
    assert counted == sum(int(e[0]["tokens_used"]) for e in finals.values())  # type: ignore[call-overload]


def _check_event_order(status_log: StatusLog) -> None:
    by_task: dict[str, list[int]] = {}
    for event in status_log.events():
        by_task.setdefault(event["task_id"], []).append(event["status"])
    assert all(codes == [1, 2, 3] for codes in by_task.values()), {
        t: c for t, c in by_task.items() if c != [1, 2, 3]
    }


def _check_result_object(s3: Minio, names: Names, final: dict[str, object]) -> None:
    assert final["result"] == {"bucket": "llm-output", "key": f"{names.prefix}e2e-000.json"}
    assert final["metadata"] == {"n": 0} and final["tokens_used"] > 0  # type: ignore[operator]
    body = json.loads(s3.get_object("llm-output", f"{names.prefix}e2e-000.json").read())
    assert set(body) == {
        "task_id",
        "model",
        "content",
        "finish_reason",
        "usage",
        "worker_id",
        "created_at",
        "processing_ms",
        "metadata",
    }
    assert body["task_id"] == "e2e-000" and body["usage"]["total_tokens"] == final["tokens_used"]
    assert "Summarise the document" in body["content"] or body["content"]


def _check_log_lines(log: str, names: Names) -> None:
    assert f"Worker started, listening to Kafka topic '{names.tasks}'..." in log
    assert re.search(r" - INFO - Processing task e2e-007 with worker \S+:0:\d+$", log, re.M)
    assert re.search(r" - INFO - Task e2e-007 completed: \d+ tokens$", log, re.M)
    assert re.search(r" - INFO - Task e2e-007 processed in \d+\.\dms$", log, re.M)
    for code in (1, 2, 3):
        assert f" - INFO - Status {code} sent for task e2e-007\n" in log
    assert " - ERROR - " not in log and "Traceback" not in log


def _check_runbook_average(log_path: Path, finals: dict[str, list[dict[str, object]]]) -> None:
    out = subprocess.run(
        ["bash", "-c", RUNBOOK_AVERAGE.format(log=log_path)], capture_output=True, text=True, check=True
    ).stdout
    match = re.fullmatch(r"Average: ([0-9.e+-]+) ms\n", out)
    assert match, out
    expected = statistics.mean(float(e[0]["processing_ms"]) for e in finals.values())  # type: ignore[arg-type]
    assert float(match.group(1)) == pytest.approx(expected, abs=0.1)


def _check_no_lag(stack: Stack, names: Names) -> None:
    rows = group_rows(stack, names.group)  # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert len(rows) == 4, rows
    assert [row[5] for row in rows] == ["0"] * 4, rows
