"""Places on the real stack (llm_worker/places.py): ``WORKER_MAX_CONCURRENT_TASKS`` bounds the model
calls at once; as many tasks again get ready ahead of a place (RECEIVED before PROCESSING), and as
many again may be past theirs (the model answered; the result write, the final status and the
final-status marker follow outside the place), never more; every task still gets its marker."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from bench.common import event_ts
from llm_service import exit_codes
from llm_worker.task_message import FINAL_MARKER_PREFIX, ObjectRef
from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import send, task_bytes

pytestmark = pytest.mark.stack

PLACES = 4
TASKS = 48


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The most spans open at one time; one ending when another starts does not overlap it."""
    spans = list(spans)
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:  # at a tie the end (-1) sorts first
        now += step
        most = max(most, now)
    return most


def test_tasks_and_model_calls_in_flight_stay_within_the_places(bed: Testbed) -> None:
    names, status_log = bed.names, bed.status_log()
    bed.emulator.config(latency=0.3, latency_per_token=0)
    ids = [f"place-{i:02d}" for i in range(TASKS)]
    for task_id in ids:
        send(bed.producer, names.tasks, task_bytes(task_id, prompt=f"Say {task_id}"), key=task_id.encode())
    # The host cap far above the places: only the places bound the calls here.
    env = bed.env(WORKER_MAX_CONCURRENT_TASKS=str(PLACES), GIGACHAT_MAX_CONCURRENCY="64")
    worker = bed.start_worker(env).started()

    finals = status_log.wait_finals(ids, timeout=240)
    assert {t: [e["status"] for e in events] for t, events in finals.items()} == {t: [3] for t in ids}

    events = status_log.events()
    received = {e["task_id"]: event_ts(e) for e in events if e["status"] == 1}
    processing = {e["task_id"]: event_ts(e) for e in events if e["status"] == 2}
    # In a place or past it (at most as many past as there are places: Places.most_past).
    assert most_at_once((processing[t], event_ts(finals[t][0])) for t in ids) <= 2 * PLACES
    # Ready ahead too: more tasks than places between RECEIVED and their final status, never more
    # than the places, the ready ones and the past ones together.
    assert PLACES < most_at_once((received[t], event_ts(finals[t][0])) for t in ids) <= 3 * PLACES

    calls = [c for t in ids for c in bed.emulator.calls(t) if c["endpoint"].endswith("/chat/completions")]
    assert len(calls) == TASKS
    model_spans = [(c["ts"] - c["duration_ms"] / 1000.0, c["ts"]) for c in calls]
    assert most_at_once(model_spans) == PLACES  # all the places were used, never more

    markers = {ObjectRef("llm-output", f"{names.prefix}{t}.json").final_marker().key for t in ids}

    def all_marked() -> bool:
        prefix = f"{FINAL_MARKER_PREFIX}{names.prefix}"
        found = {o.object_name for o in bed.s3.list_objects("llm-output", prefix=prefix, recursive=True)}
        return markers <= found

    wait_until(all_marked, timeout=60, what="a final-status marker for every task")
    assert worker.stop() == exit_codes.OK
