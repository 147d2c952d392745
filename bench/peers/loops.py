"""The two hand-written loops: ``python -m bench.peers.loops one-at-a-time`` or ``thread-pool --threads 64``.

* one-at-a-time: ``for record in consumer: handle(record)`` with kafka-python's defaults (auto-commit);
  one task in flight, so at most 1 / L tasks per second.
* thread-pool: the loop hands each record to a pool of N threads (at most N in flight) and lets
  kafka-python auto-commit offsets every 5 s, whether or not the task finished: a crash loses the
  tasks in flight whose offsets were already committed. Fast and unsafe, as usually written.

Prints ``peer ready`` once the consumer owns partitions, so the benchmark starts its clock then.
Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

from kafka import KafkaConsumer

from bench.peers.task import TaskHandler

stopping = threading.Event()
# As people write it. Shorter polls also meet kafka-python 3.0.12's join bugs on a busy machine (a
# lookup or join outliving the poll's timeout is never applied; see llm_worker/join_guard.py).
POLL_MS = 1000


def _stop(signum: int, frame: FrameType | None) -> None:
    stopping.set()


def _consumer(max_records: int) -> KafkaConsumer:
    env = os.environ
    return KafkaConsumer(
        env["KAFKA_TASKS_TOPIC"],
        bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        group_id=env["KAFKA_GROUP_ID"],
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_poll_records=max_records,
    )


def _announce_ready(consumer: KafkaConsumer, said: bool) -> bool:
    if not said and consumer.assignment():
        print("peer ready", flush=True)
        return True
    return said


def one_at_a_time(handler: TaskHandler) -> None:
    consumer = _consumer(1)
    ready = False
    while not stopping.is_set():
        for records in consumer.poll(timeout_ms=POLL_MS).values():
            for record in records:
                handler.handle(record.value)
        ready = _announce_ready(consumer, ready)
    consumer.close()


def thread_pool(handler: TaskHandler, threads: int) -> None:
    consumer = _consumer(threads)
    slots = threading.BoundedSemaphore(threads)
    ready = False

    def work(value: bytes) -> None:
        try:
            handler.handle(value)
        finally:
            slots.release()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        while not stopping.is_set():
            for records in consumer.poll(timeout_ms=POLL_MS).values():
                for record in records:
                    slots.acquire()
                    pool.submit(work, record.value)
            ready = _announce_ready(consumer, ready)
    consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=["one-at-a-time", "thread-pool"])
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack: a stuck loop
    handler = TaskHandler(threads=args.threads if args.loop == "thread-pool" else 1)
    try:
        if args.loop == "one-at-a-time":
            one_at_a_time(handler)
        else:
            thread_pool(handler, args.threads)
    finally:
        handler.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
