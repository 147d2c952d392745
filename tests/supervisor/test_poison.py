"""A message that kills its worker every time, under the real supervisor with real workers.

The test itself plays the crash: whenever a worker logs that it started the poison task, the test
kill -9s that worker (no hook in the service). The supervisor charges each death to the messages the
dead worker held; the third delivery must be quarantined (DLQ and FAILED with code POISON) while the
good tasks of the same partition complete and the slot keeps working (not FATAL).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal

import pytest
from kafka import KafkaProducer

from devstack.stack import Stack
from tests.supervisor.conftest import StartSupervisor
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until
from tests.worker.harness import EmulatorControl, Names, StatusLog, TopicReader, task_bytes

pytestmark = pytest.mark.stack

PARTITION = 1


def kill_each_start_of(sup: Supervisor, task_id: str, kills: list[int]) -> None:
    """kill -9 every worker that logged a start of ``task_id`` and was not killed yet."""
    pattern = re.compile(rf"Processing task {re.escape(task_id)} with worker [^:\s]+:\d+:(\d+)")
    for pid in (int(m) for m in pattern.findall(sup.log_text())):
        if pid not in kills:
            kills.append(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def dead_letters(reader: TopicReader) -> list[dict[str, str]]:
    reader.read(0.1)
    return [{k: v.decode() for k, v in r.headers} for r in reader.records]


def test_a_message_that_kills_its_worker_every_time_is_quarantined(
    *,
    start_real: StartSupervisor,
    stack: Stack,
    producer: KafkaProducer,
    names: Names,
    status_log: StatusLog,
    emulator: EmulatorControl,
) -> None:
    emulator.config(latency=0.5)
    sup = start_real(WORKER_PROCESSES="1")  # load shedding is off in every start_real (conftest)
    sup.running(1, timeout=60)
    ids = ["poison-1"] + [f"good-{i}" for i in range(6)]
    for task_id in ids:  # one partition: the good tasks queue behind (and beside) the poison one
        producer.send(
            names.tasks, key=task_id.encode(), value=task_bytes(task_id, prompt=task_id), partition=PARTITION
        )
    producer.flush(timeout=30)
    kills: list[int] = []
    dlq = TopicReader(stack.kafka_bootstrap, names.dlq)
    try:

        def quarantined() -> bool:
            kill_each_start_of(sup, "poison-1", kills)
            status_log.read(0.1)
            return "poison-1" in status_log.finals()

        wait_until(quarantined, timeout=180, what="poison-1 quarantined", step=0.05)
        finals = status_log.wait_finals(ids, timeout=120)
        letters = wait_until(lambda: dead_letters(dlq) or None, timeout=30, what="a dead letter")
    finally:
        dlq.close()

    assert len(kills) == 2, f"the poison task ran {len(kills)} times before the quarantine; expected 2"
    [poison] = finals["poison-1"]
    assert (poison["status"], poison["error"]["code"]) == (4, "POISON")
    assert [(d["error_code"], d["task_id"], d["source_partition"]) for d in letters] == [
        ("POISON", "poison-1", str(PARTITION))
    ]
    good = {t: [e["status"] for e in events] for t, events in finals.items() if t != "poison-1"}
    assert good == {t: [3] for t in ids[1:]}, good
    assert "died holding partition" in sup.log_text()
    [slot] = sup.workers()
    assert slot["state"] != "FATAL"
    wait_until(lambda: sup.workers()[0]["state"] == "RUNNING", timeout=60, what="the slot running again")
