"""One task id, several messages, on the real stack: real worker processes, broker, S3 and emulator.

The emulator's call log counts the model calls per task id (X-Request-ID), so each test asserts how
many calls a task cost, not only which statuses came out.
"""

from __future__ import annotations

import io

import pytest

from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import send, task_bytes

pytestmark = pytest.mark.stack


def _uid(bed: Testbed) -> str:
    return bed.names.tasks.removesuffix("-tasks")


def _statuses(finals: dict[str, list[dict[str, object]]]) -> dict[str, list[object]]:
    return {t: [e["status"] for e in events] for t, events in finals.items()}


def test_duplicates_in_flight_cost_one_call_and_a_re_sent_task_gets_its_outcome_again(bed: Testbed) -> None:
    bed.emulator.config(latency=2.0)
    status_log = bed.status_log()
    task_id = f"{_uid(bed)}-dup"
    value = task_bytes(task_id, prompt="say dup")
    worker = bed.start_worker(bed.env(WORKER_MAX_CONCURRENT_TASKS="4")).started()
    send(bed.producer, bed.names.tasks, value, key=task_id.encode())
    send(bed.producer, bed.names.tasks, value, key=task_id.encode())

    wait_until(
        lambda: len(status_log.read() and status_log.finals().get(task_id, [])) >= 2,
        timeout=60,
        what="both messages answered",
    )
    assert "being run by another delivery on this host" in worker.log_text()
    send(bed.producer, bed.names.tasks, value, key=task_id.encode())  # sent again after the end
    wait_until(
        lambda: len(status_log.read() and status_log.finals().get(task_id, [])) >= 3,
        timeout=60,
        what="the re-sent message answered",
    )
    finals = status_log.finals()[task_id]
    assert [e["status"] for e in finals] == [3, 3, 3]
    assert len({str(e["result"]) for e in finals}) == 1 and len({e["tokens_used"] for e in finals}) == 1
    assert bed.emulator.calls_per_task().get(task_id) == 1
    assert worker.log_text().count("sending that status again for a new message") == 2


def test_a_re_sent_failed_task_gets_failed_again_not_a_new_run(bed: Testbed) -> None:
    status_log = bed.status_log()
    task_id = f"{_uid(bed)}-gone"
    key = f"{_uid(bed)}/gone.txt"
    value = task_bytes(task_id, prompt="x", input={"bucket": "llm-input", "key": key})
    bed.start_worker(bed.env()).started()
    send(bed.producer, bed.names.tasks, value, key=task_id.encode())
    [first] = status_log.wait_finals([task_id], timeout=60)[task_id]
    assert first["error"]["code"] == "INPUT_NOT_FOUND"
    bed.s3.put_object("llm-input", key, io.BytesIO(b"now it exists"), len(b"now it exists"))
    send(bed.producer, bed.names.tasks, value, key=task_id.encode())
    wait_until(
        lambda: len(status_log.read() and status_log.finals().get(task_id, [])) >= 2,
        timeout=60,
        what="the re-sent message answered",
    )
    again = status_log.finals()[task_id]
    assert [(e["status"], e["error"]["code"]) for e in again] == [(4, "INPUT_NOT_FOUND")] * 2
    assert bed.emulator.calls_per_task().get(task_id, 0) == 0


def test_a_partition_revoked_mid_call_is_not_billed_again_by_its_new_owner(bed: Testbed) -> None:
    bed.create(partitions=2)
    bed.emulator.config(latency=25.0)  # outlasts the second worker's start and the rebalance
    status_log = bed.status_log()
    ids = [f"{_uid(bed)}-rv{p}" for p in (0, 1)]
    env = bed.env(WORKER_REVOKE_TIMEOUT_S="1", WORKER_MAX_CONCURRENT_TASKS="4")
    first = bed.start_worker(env, slot=0, name="first").started()
    for partition, task_id in enumerate(ids):
        bed.producer.send(
            bed.names.tasks,
            key=task_id.encode(),
            value=task_bytes(task_id, prompt="slow"),
            partition=partition,
        )
    bed.producer.flush(timeout=30)

    def calling() -> bool:  # PROCESSING goes out just before the model call
        status_log.read()
        return {e["task_id"] for e in status_log.events() if e["status"] == 2} >= set(ids)

    wait_until(calling, timeout=60, what="both model calls under way in the first worker")
    second = bed.start_worker(env, slot=1, name="second")  # takes one partition, mid-call
    second.wait_for_log("Partitions assigned", timeout=60)

    finals = status_log.wait_finals(ids, timeout=120)
    assert _statuses(finals) == {t: [3] for t in ids}
    first.wait_for_log("Partitions revoked")
    second.wait_for_log("being run by another delivery on this host")
    second.wait_for_log("not sending it again")
    calls = bed.emulator.calls_per_task()
    assert {t: calls.get(t) for t in ids} == {t: 1 for t in ids}


def test_model_calls_of_a_task_stop_at_task_max_model_calls(bed: Testbed) -> None:
    bed.emulator.config(error_rate=1.0, error_codes=[503])
    status_log = bed.status_log()
    task_id = f"{_uid(bed)}-cap"
    env = bed.env(
        TASK_MAX_MODEL_CALLS="3",
        TASK_MAX_ATTEMPTS="5",
        GIGACHAT_CALL_ATTEMPTS="2",
        GIGACHAT_BACKOFF_BASE_S="0.05",
        GIGACHAT_BACKOFF_MAX_S="0.1",
        GIGACHAT_BREAKER_FAIL_MAX="100",
    )
    bed.start_worker(env).started()
    send(bed.producer, bed.names.tasks, task_bytes(task_id, prompt="x"), key=task_id.encode())
    [final] = status_log.wait_finals([task_id], timeout=120)[task_id]
    assert final["status"] == 4 and "TASK_MAX_MODEL_CALLS=3" in final["error"]["message"]
    assert bed.emulator.calls_per_task().get(task_id) == 3, "5 attempts x 2 HTTP tries would be 10"
