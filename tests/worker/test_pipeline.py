"""The pipeline's decisions, with fakes: statuses, retries, the breaker, re-emission, hand-back, DLQ."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from kafka.errors import MessageSizeTooLargeError

from llm_service.errors import (
    BreakerOpenError,
    PaymentRequiredError,
    PermanentTaskError,
    ProbeFailedError,
    TaskError,
    TransientTaskError,
)
from llm_service.status_table import Stage
from llm_worker.budget_gate import Budgets, SpendGate
from llm_worker.error_codes import COUNTED
from llm_worker.events import Source
from llm_worker.gigachat.budget import CallBudget
from llm_worker.gigachat.models import ChatResult
from llm_worker.pipeline import TaskPipeline
from llm_worker.retry_policy import RetryPolicy
from llm_worker.spending import SpendingFiles
from llm_worker.task_context import Outcome, Record, TaskContext
from llm_worker.task_lease import TaskLeases
from llm_worker.task_message import ObjectRef, TaskRules
from tests.waiting import wait_until

RULES = TaskRules(
    max_message_bytes=100_000,
    allowed_input_buckets=frozenset({"in"}),
    input_bucket="in",
    output_bucket="out",
    output_prefix="r/",
    default_model="GigaChat",
)
ANSWER = ChatResult(
    content="answer",
    finish_reason="stop",
    model="GigaChat:2",
    prompt_tokens=7,
    completion_tokens=5,
    total_tokens=12,
    raw={},
)


class Delivered:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.is_done = True

    def get(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class FakePublisher:
    worker_id = "host:0:1"

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.refuse_full_dlq = False
        self.refuse_full_status = False

    def status(self, event: dict[str, Any], *, cut: bool = False) -> Delivered:
        if self.refuse_full_status and not cut:
            return Delivered(MessageSizeTooLargeError("too big"))
        self.statuses.append({**event, "metadata": None} if cut else event)
        return Delivered()

    def dead_letter(
        self,
        *,
        raw: bytes | None,
        key: bytes | None,
        task_id: str | None,
        error: TaskError,
        source: Source,
        limit: int | None = None,
    ) -> Delivered:
        if self.refuse_full_dlq and limit is None:
            return Delivered(MessageSizeTooLargeError("too big"))
        self.dead.append(
            {"raw": raw, "task_id": task_id, "code": error.code, "source": source, "limit": limit}
        )
        return Delivered()

    def codes(self) -> list[int]:
        return [e["status"] for e in self.statuses]


class FakeStore:
    def __init__(self, objects: dict[ObjectRef, bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self.looked_up: list[ObjectRef] = []  # every read_json, in order
        self.failing_writes: set[ObjectRef] = set()

    def read_input(self, ref: ObjectRef) -> bytes:
        if ref not in self.objects:
            raise PermanentTaskError("missing", code="INPUT_NOT_FOUND")
        return self.objects[ref]

    def read_json(self, ref: ObjectRef) -> dict[str, Any] | None:
        self.looked_up.append(ref)
        body = self.objects.get(ref)
        return json.loads(body) if body is not None else None

    def write_json(self, ref: ObjectRef, body: dict[str, Any]) -> None:
        if ref in self.failing_writes:
            raise PermanentTaskError("S3 refused the write", code="STORAGE_ERROR")
        self.objects[ref] = json.dumps(body).encode()


class FakeModel:
    def __init__(self, *outcomes: ChatResult | Exception) -> None:
        self.outcomes = list(outcomes) or [ANSWER]
        self.calls: list[list[dict[str, Any]]] = []
        self.sent: list[tuple[dict[str, Any], bool]] = []  # (params, fallback) per call
        self.uploads: list[str] = []
        self.deleted: list[str] = []

    def chat(
        self,
        *,
        task_id: str,
        messages: list[dict[str, Any]],
        model: str,
        params: Mapping[str, Any],
        deadline: float,
        fallback: bool = True,
        budget: CallBudget | None = None,
    ) -> ChatResult:
        if budget is not None and not budget.take():
            raise TransientTaskError("no calls left", code="MODEL_UNAVAILABLE")
        self.calls.append(messages)
        self.sent.append((dict(params), fallback))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def upload_file(
        self, *, task_id: str, filename: str, data: bytes, content_type: str, deadline: float
    ) -> str:
        self.uploads.append(filename)
        return "file-1"

    def delete_file(self, *, task_id: str, file_id: str) -> None:
        self.deleted.append(file_id)


class FakeProgress:
    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self.finished: list[bool] = []
        self.dropped = 0
        self.counters: dict[str, float] = {}
        self.codes: list[str] = []  # error codes of failed tasks, as counted for the metrics

    def task_started(self, task_id: str) -> int:
        return 0

    def task_stage(self, entry: int, stage: Stage) -> None:
        self.stages.append(stage)

    def task_finished(
        self,
        entry: int,
        *,
        ok: bool,
        tokens: int = 0,
        processing_ms: float = 0.0,
        code_index: int = -1,
    ) -> None:
        self.finished.append(ok)
        if not ok:
            self.codes.append(COUNTED[code_index])

    def task_rejected(self, *, code_index: int) -> None:
        self.add(failed=1)
        self.codes.append(COUNTED[code_index])

    def task_dropped(self, entry: int) -> None:
        self.dropped += 1

    def add(self, **deltas: float) -> None:
        for name, delta in deltas.items():
            self.counters[name] = self.counters.get(name, 0) + delta


class Harness:
    def __init__(
        self,
        model: FakeModel | None = None,
        store: FakeStore | None = None,
        attempts: int = 3,
        breaker_open: bool = False,
        max_model_calls: int = 100,
        *,
        gate: SpendGate | None = None,
    ) -> None:
        self.model = model or FakeModel()
        self.store = store or FakeStore()
        self.publisher = FakePublisher()
        self.progress = FakeProgress()
        self._leases = tempfile.TemporaryDirectory(prefix="leases-")
        self.pipeline = TaskPipeline(
            rules=RULES,
            storage=self.store,
            model=self.model,
            publisher=self.publisher,
            progress=self.progress,
            retry=RetryPolicy(max_attempts=attempts, base_s=0.0, max_s=0.0, rng=lambda: 0.0),
            task_timeout_s=60,
            leases=TaskLeases(directory=Path(self._leases.name)),
            max_model_calls=max_model_calls,
            breaker_open=lambda model: breaker_open,
            breaker_poll_s=0.0,
            gate=gate,
        )
        self.owned = True
        self.stopping = threading.Event()

    def run(
        self, body: dict[str, Any] | bytes, offset: int = 40, *, first: bool = False, key: bytes = b"k"
    ) -> Outcome:
        value = body if isinstance(body, bytes) else json.dumps(body).encode()
        ctx = TaskContext(still_owned=lambda: self.owned, stopping=self.stopping)
        return self.pipeline.run(Record("tasks", 2, offset, key, value), ctx, first_delivery=first)

    def quarantine(self, body: dict[str, Any] | bytes, deaths: int = 2) -> Outcome:
        value = body if isinstance(body, bytes) else json.dumps(body).encode()
        ctx = TaskContext(still_owned=lambda: self.owned, stopping=self.stopping)
        return self.pipeline.quarantine(Record("tasks", 2, 40, b"k", value), ctx, deaths=deaths)


def test_happy_path_with_text_input() -> None:
    store = FakeStore({ObjectRef("in", "a.txt"): "Привет".encode("cp1251")})
    h = Harness(store=store)
    outcome = h.run({"task_id": "t1", "prompt": "Summarise", "input": {"key": "a.txt"}, "metadata": {"m": 1}})

    assert outcome is Outcome.DONE
    assert h.publisher.codes() == [1, 2, 3]
    final = h.publisher.statuses[-1]
    assert final["tokens_used"] == 12 and final["result"] == {"bucket": "out", "key": "r/t1.json"}
    assert final["metadata"] == {"m": 1} and final["worker_id"] == "host:0:1" and final["error"] is None
    assert h.model.calls == [[{"role": "user", "content": "Summarise\n\nПривет"}]]
    result = json.loads(h.store.objects[ObjectRef("out", "r/t1.json")])
    assert (
        result["content"] == "answer" and result["usage"]["total_tokens"] == 12 and result["task_id"] == "t1"
    )
    assert h.progress.finished == [True]
    assert h.progress.stages[:3] == [Stage.READING_INPUT, Stage.CALLING_MODEL, Stage.WRITING_RESULT]


def test_completed_names_the_model_and_fallback_false_reaches_the_client_not_the_model() -> None:
    h = Harness()
    body = {"task_id": "t1", "prompt": "x", "params": {"temperature": 0.5, "fallback": False}}
    assert h.run(body) is Outcome.DONE

    assert h.model.sent == [({"temperature": 0.5}, False)]
    assert h.publisher.statuses[-1]["model"] == ANSWER.model
    h2 = Harness()
    h2.run({"task_id": "t2", "prompt": "x"})
    assert h2.model.sent == [({}, True)]  # fallback allowed unless the task forbids it


def test_a_non_boolean_fallback_param_is_rejected() -> None:
    h = Harness()
    assert h.run({"task_id": "t1", "prompt": "x", "params": {"fallback": "no"}}) is Outcome.DONE
    assert h.model.calls == []
    assert h.publisher.statuses[-1]["error"]["code"] == "INVALID_TASK"


def test_existing_result_is_re_emitted_without_calling_the_model() -> None:
    written = {"task_id": "t1", "usage": {"total_tokens": 30}, "processing_ms": 12.5, "content": "old"}
    h = Harness(store=FakeStore({ObjectRef("out", "r/t1.json"): json.dumps(written).encode()}))
    assert h.run({"task_id": "t1", "prompt": "x"}) is Outcome.DONE
    assert h.model.calls == []
    assert h.publisher.codes() == [1, 3]
    assert h.publisher.statuses[-1]["tokens_used"] == 30 and h.publisher.statuses[-1]["processing_ms"] == 12.5


def test_a_result_of_another_task_at_the_same_key_is_overwritten() -> None:
    other = {"task_id": "someone-else", "usage": {"total_tokens": 1}}
    h = Harness(store=FakeStore({ObjectRef("out", "r/t1.json"): json.dumps(other).encode()}))
    h.run({"task_id": "t1", "prompt": "x"})
    assert len(h.model.calls) == 1 and h.publisher.codes() == [1, 2, 3]


def test_permanent_input_error_fails_at_once_with_a_dead_letter() -> None:
    h = Harness()
    assert h.run({"task_id": "t1", "prompt": "x", "input": {"key": "missing.txt"}}) is Outcome.DONE
    assert h.model.calls == []
    assert h.publisher.codes() == [1, 4]
    assert h.publisher.statuses[-1]["error"]["code"] == "INPUT_NOT_FOUND"
    assert [(d["task_id"], d["code"], d["source"]) for d in h.publisher.dead] == [
        ("t1", "INPUT_NOT_FOUND", Source("tasks", 2, 40))
    ]
    assert h.progress.finished == [False]
    assert h.progress.codes == ["INPUT_NOT_FOUND"]


def test_transient_failures_retry_with_a_new_processing_status() -> None:
    h = Harness(FakeModel(TransientTaskError("503", code="MODEL_UNAVAILABLE"), ANSWER))
    assert h.run({"task_id": "t1", "prompt": "x"}) is Outcome.DONE
    assert h.publisher.codes() == [1, 2, 2, 3]
    assert [e["attempt"] for e in h.publisher.statuses] == [1, 1, 2, 2]
    assert h.progress.counters == {"retried": 1, "model_calls": 2, "model_errors": 1}


def test_transient_failures_end_in_failed_after_the_last_attempt() -> None:
    h = Harness(FakeModel(TransientTaskError("429", code="MODEL_RATE_LIMITED")), attempts=3)
    h.run({"task_id": "t1", "prompt": "x"})
    assert len(h.model.calls) == 3
    assert h.publisher.codes() == [1, 2, 2, 2, 4]
    assert h.publisher.statuses[-1]["error"]["code"] == "MODEL_RATE_LIMITED"
    assert h.publisher.statuses[-1]["attempt"] == 3
    assert len(h.publisher.dead) == 1


def test_an_open_breaker_costs_no_attempt() -> None:
    refused = BreakerOpenError("open")
    h = Harness(FakeModel(refused, refused, refused, ANSWER), attempts=1)
    assert h.run({"task_id": "t1", "prompt": "x"}) is Outcome.DONE
    assert h.publisher.codes() == [1, 2, 3]  # one PROCESSING: the refused calls were never attempts
    assert Stage.RETRY_WAIT in h.progress.stages
    assert h.progress.counters == {"model_calls": 1}  # a refusal sent no request


def test_failures_while_the_breaker_is_open_cost_no_attempt() -> None:
    failed = TransientTaskError("503, then the breaker opened", code="MODEL_UNAVAILABLE")
    h = Harness(FakeModel(failed, failed, ANSWER), attempts=1, breaker_open=True)
    assert h.run({"task_id": "t1", "prompt": "x"}) is Outcome.DONE
    assert h.publisher.codes()[-1] == 3


def test_a_prompt_that_fails_every_probe_uses_up_its_attempts_and_fails() -> None:
    """Issue 7 item 5: a failed half-open probe counts, so one bad prompt cannot hold the breaker open."""
    probe = ProbeFailedError("503 as the circuit breaker's probe", code="MODEL_UNAVAILABLE")
    h = Harness(FakeModel(probe, probe, probe, ANSWER), attempts=3, breaker_open=True)
    h.run({"task_id": "t1", "prompt": "x"})
    assert len(h.model.calls) == 3
    assert h.publisher.codes()[-1] == 4 and h.publisher.statuses[-1]["attempt"] == 3
    assert [d["code"] for d in h.publisher.dead] == ["MODEL_UNAVAILABLE"]


def test_model_4xx_is_permanent() -> None:
    h = Harness(FakeModel(PermanentTaskError("422", code="MODEL_BAD_REQUEST")))
    h.run({"task_id": "t1", "prompt": "x"})
    assert len(h.model.calls) == 1 and h.publisher.codes() == [1, 2, 4]
    assert h.progress.counters == {"model_calls": 1, "model_errors": 1}
    assert h.progress.codes == ["MODEL_BAD_REQUEST"]


@pytest.mark.parametrize(("raw", "task_id"), [(b"{broken", None), (b'{"task_id": "t9"}', "t9")])
def test_invalid_messages_go_to_the_dlq_and_fail_when_named(raw: bytes, task_id: str | None) -> None:
    h = Harness()
    assert h.run(raw) is Outcome.DONE
    assert h.publisher.codes() == ([4] if task_id else [])
    assert [d["raw"] for d in h.publisher.dead] == [raw]
    assert h.progress.counters == {"failed": 1}
    assert h.progress.codes == ["INVALID_JSON" if task_id is None else "INVALID_TASK"]


def test_a_dlq_that_refuses_the_full_message_gets_a_truncated_copy() -> None:
    h = Harness()
    h.publisher.refuse_full_dlq = True
    assert h.run(b"not json at all") is Outcome.DONE
    assert [d["limit"] for d in h.publisher.dead] == [900 * 1024]


def test_a_revoked_partition_hands_the_task_back_before_the_model_call() -> None:
    h = Harness()
    h.owned = False
    assert h.run({"task_id": "t1", "prompt": "x"}) is Outcome.HANDED_BACK
    assert h.model.calls == [] and 3 not in h.publisher.codes() and 4 not in h.publisher.codes()
    assert h.progress.dropped == 1 and h.progress.finished == []


def test_documents_go_through_the_files_api() -> None:
    store = FakeStore({ObjectRef("in", "scan.pdf"): b"%PDF-1.4 data"})
    h = Harness(store=store)
    h.run({"task_id": "t1", "prompt": "Describe", "input": {"key": "scan.pdf"}})
    assert h.model.uploads == ["scan.pdf"] and h.model.deleted == ["file-1"]
    assert h.model.calls == [[{"role": "user", "content": "Describe", "attachments": ["file-1"]}]]


def test_a_bug_fails_the_task_as_internal() -> None:
    h = Harness(FakeModel(ZeroDivisionError("boom")))
    assert h.run({"task_id": "t1", "prompt": "x"}) is Outcome.DONE
    assert h.publisher.statuses[-1]["error"]["code"] == "INTERNAL"


def test_messages_form_gets_the_input_appended_to_the_last_user_message() -> None:
    store = FakeStore({ObjectRef("in", "a.txt"): b"text"})
    h = Harness(store=store)
    h.run(
        {
            "task_id": "t1",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            "input": {"key": "a.txt"},
        }
    )
    assert h.model.calls == [[{"role": "system", "content": "s"}, {"role": "user", "content": "q\n\ntext"}]]


def test_final_status_is_noted_once_acknowledged() -> None:
    h = Harness()
    assert h.run({"task_id": "t9", "prompt": "p"}) is Outcome.DONE
    marker = json.loads(h.store.objects[ObjectRef("out", "r/t9.json").final_marker()])
    assert (marker["task_id"], marker["status"]) == ("t9", 3)


def test_failed_status_is_noted_too() -> None:
    h = Harness(FakeModel(PermanentTaskError("bad", code="MODEL_BAD_REQUEST")))
    assert h.run({"task_id": "t10", "prompt": "p"}) is Outcome.DONE
    assert json.loads(h.store.objects[ObjectRef("out", "r/t10.json").final_marker()])["status"] == 4


def test_redelivery_after_the_final_status_sends_nothing() -> None:
    h = Harness()
    assert h.run({"task_id": "t11", "prompt": "p"}) is Outcome.DONE
    sent = len(h.publisher.statuses)
    assert h.run({"task_id": "t11", "prompt": "p"}) is Outcome.DONE
    assert len(h.publisher.statuses) == sent, "a redelivered finished task must not repeat its statuses"
    assert len(h.model.calls) == 1
    assert h.progress.dropped == 1


def test_result_without_marker_reemits_completed_once() -> None:
    h = Harness()
    assert h.run({"task_id": "t12", "prompt": "p"}) is Outcome.DONE
    del h.store.objects[
        ObjectRef("out", "r/t12.json").final_marker()
    ]  # crashed after writing the result, before the marker
    assert h.run({"task_id": "t12", "prompt": "p"}) is Outcome.DONE
    assert h.publisher.codes() == [1, 2, 3, 1, 3]
    assert len(h.model.calls) == 1
    assert ObjectRef("out", "r/t12.json").final_marker() in h.store.objects


@pytest.mark.parametrize(("body", "status"), [({"task_id": "t1"}, 4), ({"task_id": "t1", "prompt": "x"}, 3)])
def test_a_status_the_broker_refuses_as_too_large_is_sent_cut_down(body: dict[str, Any], status: int) -> None:
    h = Harness()
    h.publisher.refuse_full_status = True  # before the fix: re-sent forever, the partition stuck
    assert h.run({**body, "metadata": {"m": 1}}) is Outcome.DONE
    finals = [e for e in h.publisher.statuses if e["status"] in (3, 4)]
    assert [(e["status"], e["task_id"], e["metadata"]) for e in finals] == [(status, "t1", None)]


def test_the_door_fails_a_message_the_pipeline_itself_chokes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(raw: bytes | None, rules: TaskRules) -> None:
        raise RuntimeError("a bug in the parser")

    monkeypatch.setattr("llm_worker.pipeline.parse_task", broken)
    h = Harness()
    assert h.run({"task_id": "t1", "prompt": "x", "metadata": {"m": 1}}) is Outcome.DONE
    assert [(e["status"], e["error"]["code"], e["metadata"]) for e in h.publisher.statuses] == [
        (4, "INTERNAL", None)
    ]
    assert [(d["task_id"], d["code"]) for d in h.publisher.dead] == [("t1", "INTERNAL")]
    assert h.progress.counters == {"failed": 1}


def test_a_new_message_for_a_completed_task_gets_the_stored_status_again() -> None:
    h = Harness()
    assert h.run({"task_id": "t13", "prompt": "p", "metadata": {"n": 1}}, offset=40) is Outcome.DONE
    first = h.publisher.statuses[-1]
    assert h.run({"task_id": "t13", "prompt": "p", "metadata": {"n": 2}}, offset=41) is Outcome.DONE
    again = h.publisher.statuses[-1]
    assert h.publisher.codes() == [1, 2, 3, 3], "the new message gets only the final status, no RECEIVED"
    assert (again["tokens_used"], again["result"], again["metadata"]) == (12, first["result"], {"n": 2})
    assert len(h.model.calls) == 1
    assert h.run({"task_id": "t13", "prompt": "p"}, offset=41) is Outcome.DONE
    assert h.run({"task_id": "t13", "prompt": "p"}, offset=40) is Outcome.DONE
    assert h.publisher.codes() == [1, 2, 3, 3], "redeliveries of either message stay silent"


def test_a_new_message_for_a_failed_task_gets_failed_again_without_a_model_call() -> None:
    h = Harness(FakeModel(PermanentTaskError("bad", code="MODEL_BAD_REQUEST")))
    assert h.run({"task_id": "t14", "prompt": "p"}, offset=40) is Outcome.DONE
    assert h.run({"task_id": "t14", "prompt": "p"}, offset=50) is Outcome.DONE
    final = h.publisher.statuses[-1]
    assert (final["status"], final["error"]["code"], final["error"]["message"]) == (
        4,
        "MODEL_BAD_REQUEST",
        "bad",
    )
    assert len(h.model.calls) == 1 and len(h.publisher.dead) == 1


def test_a_marker_without_sources_counts_as_the_same_message() -> None:
    h = Harness()
    marker = ObjectRef("out", "r/t15.json").final_marker()
    h.store.objects[marker] = json.dumps({"task_id": "t15", "status": 3, "ts": "x"}).encode()
    assert h.run({"task_id": "t15", "prompt": "p"}, offset=77) is Outcome.DONE
    assert h.publisher.statuses == [] and h.model.calls == []


def test_a_quarantined_task_fails_as_poison_without_running() -> None:
    h = Harness()
    assert h.quarantine({"task_id": "t16", "prompt": "p"}, deaths=2) is Outcome.DONE
    final = h.publisher.statuses[-1]
    assert (final["status"], final["error"]["code"]) == (4, "POISON")
    assert [d["code"] for d in h.publisher.dead] == ["POISON"]
    assert h.model.calls == []
    marker = json.loads(h.store.objects[ObjectRef("out", "r/t16.json").final_marker()])
    assert marker["outcome"]["error"]["code"] == "POISON"


def test_a_quarantined_message_without_a_task_goes_to_the_dlq() -> None:
    h = Harness()
    assert h.quarantine(b"\xff\xfe not json") is Outcome.DONE
    assert h.publisher.statuses == [] and [d["code"] for d in h.publisher.dead] == ["POISON"]


def test_model_calls_of_one_delivery_stop_at_the_cap() -> None:
    failing = TransientTaskError("503", code="MODEL_UNAVAILABLE")
    h = Harness(FakeModel(failing), attempts=5, max_model_calls=3)
    assert h.run({"task_id": "t17", "prompt": "p"}) is Outcome.DONE
    assert len(h.model.calls) == 3
    final = h.publisher.statuses[-1]
    assert (final["status"], final["error"]["code"]) == (4, "MODEL_UNAVAILABLE")


def test_a_second_delivery_waits_for_the_running_one_and_sends_its_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    entered = threading.Event()

    class SlowModel(FakeModel):
        def chat(self, **kwargs: Any) -> ChatResult:
            entered.set()
            release.wait(10)
            return super().chat(**kwargs)

    h = Harness(SlowModel())
    first = threading.Thread(target=h.run, args=({"task_id": "t18", "prompt": "p"}, 40))
    first.start()
    assert entered.wait(10)
    second_done: list[Outcome] = []
    second = threading.Thread(target=lambda: second_done.append(h.run({"task_id": "t18", "prompt": "p"}, 41)))
    with caplog.at_level("INFO", logger="llm_worker.task_lease"):
        second.start()
        wait_until(
            lambda: "being run by another delivery" in caplog.text, timeout=10, what="the second waiting"
        )
    assert second_done == []
    release.set()
    first.join(10)
    second.join(10)
    assert second_done == [Outcome.DONE]
    assert len(h.model.calls) == 1
    assert [e["status"] for e in h.publisher.statuses if e["status"] in (3, 4)] == [3, 3]


def test_a_quarantined_message_that_already_got_its_status_stays_silent() -> None:
    h = Harness()
    assert h.quarantine({"task_id": "t19", "prompt": "p"}) is Outcome.DONE
    sent = len(h.publisher.statuses)
    assert h.quarantine({"task_id": "t19", "prompt": "p"}) is Outcome.DONE  # redelivered before its commit
    assert len(h.publisher.statuses) == sent and len(h.publisher.dead) == 1


def spend_gate(directory: Path, budgets: Budgets | None = None) -> SpendGate:
    return SpendGate(
        files=SpendingFiles(directory=directory, zone=ZoneInfo("UTC")),
        budgets=budgets or Budgets(pool=0, tenants={}, tenant_field="metadata.team"),
        probe_s=0.01,
        refresh_s=0.0,
    )


def test_a_402_holds_the_task_until_a_probe_succeeds_and_never_fails_it(tmp_path: Path) -> None:
    refused = PaymentRequiredError("HTTP 402", code="MODEL_PAYMENT_REQUIRED", status=402)
    gate = spend_gate(tmp_path)
    h = Harness(FakeModel(refused, refused, ANSWER), attempts=1, max_model_calls=1, gate=gate)
    assert h.run({"task_id": "t1", "prompt": "x", "metadata": {"team": "ops"}}) is Outcome.DONE
    assert h.publisher.codes() == [1, 2, 3]  # no attempt counted, no call of the cap used up
    assert gate.pool_hold() is None  # the answer ended the pause
    spent = gate.files.spent()
    assert (spent.pool, spent.tenants) == (12, {"ops": 12})


def test_a_spent_budget_calls_no_model_and_hands_the_task_back_when_stopping(tmp_path: Path) -> None:
    gate = spend_gate(tmp_path, Budgets(pool=0, tenants={"sales": 10}, tenant_field="metadata.team"))
    gate.files.add(tokens=10, tenant="sales")
    h = Harness(gate=gate)
    threading.Timer(0.3, h.stopping.set).start()
    assert h.run({"task_id": "t1", "prompt": "x", "metadata": {"team": "sales"}}) is Outcome.HANDED_BACK
    assert h.model.calls == [] and 4 not in h.publisher.codes()
    h.stopping.clear()
    assert h.run({"task_id": "t3", "prompt": "x", "metadata": {"team": "ops"}}) is Outcome.DONE  # not held


def test_a_first_delivery_looks_for_the_marker_only_and_a_possible_redelivery_for_both() -> None:
    h = Harness()
    result = ObjectRef("out", "r/f1.json")
    assert h.run({"task_id": "f1", "prompt": "p"}, offset=40, first=True, key=b"f1") is Outcome.DONE
    assert h.store.looked_up == [result.final_marker()], "a first delivery skips the result check"
    assert h.run({"task_id": "f2", "prompt": "p"}, offset=41, key=b"f2") is Outcome.DONE
    assert h.store.looked_up[1:] == [
        ObjectRef("out", "r/f2.json").final_marker(),
        ObjectRef("out", "r/f2.json"),
    ], "a possible redelivery pays both checks"


def test_a_first_delivery_of_a_finished_task_still_gets_its_outcome_again() -> None:
    h = Harness(FakeModel(PermanentTaskError("bad", code="MODEL_BAD_REQUEST")))
    assert h.run({"task_id": "f3", "prompt": "p"}, offset=40, key=b"f3") is Outcome.DONE
    assert h.run({"task_id": "f3", "prompt": "p"}, offset=90, first=True, key=b"f3") is Outcome.DONE
    assert [(e["status"], e["error"]["code"]) for e in h.publisher.statuses if e["status"] == 4] == [
        (4, "MODEL_BAD_REQUEST")
    ] * 2
    assert len(h.model.calls) == 1


@pytest.mark.parametrize("why", ["another key", "its marker write failed"])
def test_a_first_delivery_pays_the_result_check_when_a_result_may_exist_elsewhere(why: str) -> None:
    h = Harness()
    result = ObjectRef("out", "r/f4.json")
    if why == "its marker write failed":
        h.store.failing_writes.add(result.final_marker())  # the final status went out, the marker did not
        assert h.run({"task_id": "f4", "prompt": "p"}, offset=40, key=b"f4") is Outcome.DONE
        h.store.failing_writes.clear()
        key = b"f4"
    else:  # another key: another message of the task may sit on any partition, its result unmarked
        h.store.objects[result] = json.dumps({"task_id": "f4", "usage": {"total_tokens": 3}}).encode()
        key = b"not-the-task-id"
    calls = len(h.model.calls)
    assert h.run({"task_id": "f4", "prompt": "p"}, offset=90, first=True, key=key) is Outcome.DONE
    assert h.store.looked_up[-1] == result
    assert len(h.model.calls) == calls, "the existing result is sent again, the model is not called"
    assert h.publisher.statuses[-1]["status"] == 3


class FakePlace:
    """A task's place as the pipeline sees it (llm_worker/task_context.py TaskPlace); each call notes
    what was done by then: (call, statuses, lookups, model calls, result written?, marker written?)."""

    def __init__(self, h: Harness, task_id: str, *, placed: bool = True) -> None:
        self.h = h
        self.output = ObjectRef("out", f"r/{task_id}.json")
        self.placed = placed
        self.calls: list[tuple[str, list[int], int, int, bool, bool]] = []

    def _note(self, call: str) -> None:
        objects = self.h.store.objects
        done = (len(self.h.store.looked_up), len(self.h.model.calls))
        self.calls.append(
            (
                call,
                self.h.publisher.codes(),
                *done,
                self.output in objects,
                self.output.final_marker() in objects,
            )
        )

    def take(self, ctx: TaskContext) -> None:
        self._note("take")
        self.placed = True

    def release(self) -> bool:
        self._note("release")
        was, self.placed = self.placed, False
        return was

    def under_way(self) -> None:
        self._note("under_way")

    def give_way(self) -> None:
        self._note("give_way")

    def when(self, call: str) -> list[tuple[list[int], int, int, bool, bool]]:
        return [
            (codes, lookups, calls, result, marker)
            for name, codes, lookups, calls, result, marker in self.calls
            if name == call
        ]


def _run_placed(h: Harness, body: dict[str, Any], *, placed: bool = True, offset: int = 40) -> FakePlace:
    place = FakePlace(h, body["task_id"], placed=placed)
    ctx = TaskContext(still_owned=lambda: True, stopping=h.stopping, place=place)
    record = Record("tasks", 2, offset, b"k", json.dumps(body).encode())
    assert h.pipeline.run(record, ctx) is Outcome.DONE
    return place


def test_a_task_gives_its_place_back_when_the_model_answers() -> None:
    h = Harness()
    place = _run_placed(h, {"task_id": "t11", "prompt": "p"})
    # On its way until its model request goes out; the place goes to the next task as soon as the
    # model answers: the result write, COMPLETED and the marker come after, past the place.
    assert place.when("under_way")[0] == ([1, 2], 2, 0, False, False)
    assert place.when("release")[0] == ([1, 2], 2, 1, False, False)
    # That work gives way to the tasks starting their calls: before the result write, before the marker.
    assert place.when("give_way") == [([1, 2], 2, 1, False, False), ([1, 2, 3], 2, 1, True, False)]
    assert h.store.objects.keys() >= {place.output, place.output.final_marker()}
    assert h.progress.finished == [True]


def test_a_failed_task_gives_its_place_back_once_failed_is_queued() -> None:
    h = Harness(FakeModel(PermanentTaskError("bad", code="MODEL_BAD_REQUEST")))
    # Asked again with the dead letter queued: the ticket gives the place back once (test_place_tickets).
    place = _run_placed(h, {"task_id": "t12", "prompt": "p"})
    assert place.when("release")[0] == ([1, 2, 4], 2, 1, False, False)
    assert h.progress.finished == [False]


def test_a_task_that_waits_in_its_place_is_no_longer_on_its_way() -> None:
    h = Harness(FakeModel(TransientTaskError("busy", code="MODEL_UNAVAILABLE"), ANSWER))
    place = _run_placed(h, {"task_id": "t16", "prompt": "p"})
    # The retry's sleep says so too (TaskContext.sleep): nobody gives way to a task that waits.
    assert [c[0] for c in place.calls].count("under_way") >= 3  # two requests and the wait between
    assert place.when("release")[0][1:3] == (2, 2)  # placed through the retry, released once answered


def _place_taken_when(h: Harness, body: dict[str, Any]) -> list[tuple[list[int], int, int]]:
    """Run ``body`` ahead of a place; what was done when it asked for one (statuses, lookups, calls)."""
    place = _run_placed(h, body, placed=False, offset=41)
    return [(codes, lookups, calls) for codes, lookups, calls, *_ in place.when("take")]


def test_a_task_gets_ready_before_its_place_and_works_only_inside_it() -> None:
    h = Harness()
    # Ready ahead of a place (llm_worker/places.py): the lookups (the marker, and the result: a
    # possible redelivery) and RECEIVED; the input read and the model call inside.
    place = _run_placed(h, {"task_id": "t13", "prompt": "p"}, placed=False, offset=41)
    assert place.when("take") == [([1], 2, 0, False, False)]  # asked once: it holds the place from then on
    waiting = h.progress.stages.index(Stage.WAITING_PLACE)
    assert h.progress.stages[waiting + 1] is Stage.CALLING_MODEL  # (this task has no input to read)
    assert h.publisher.codes() == [1, 2, 3] and len(h.model.calls) == 1


def test_a_finished_task_sent_again_needs_no_place() -> None:
    h = Harness()
    body = {"task_id": "t14", "prompt": "p"}
    _place_taken_when(h, body)
    assert _place_taken_when(h, body) == []  # its stored final status again: no input, no model
    assert h.publisher.codes()[-1] == 3 and len(h.model.calls) == 1


def test_a_task_held_for_its_budget_waits_in_a_place(tmp_path: Path) -> None:
    # The capacity counts held tasks as places (consumer_loop.py); a task ready ahead must take its
    # place before it waits for its budget, or the model calls at once could pass the places.
    gate = spend_gate(tmp_path, Budgets(pool=0, tenants={"sales": 10}, tenant_field="metadata.team"))
    gate.files.add(tokens=10, tenant="sales")
    h = Harness(gate=gate)
    body = {"task_id": "t15", "prompt": "x", "metadata": {"team": "sales"}}
    place = FakePlace(h, "t15", placed=False)
    ctx = TaskContext(still_owned=lambda: True, stopping=h.stopping, place=place)
    outcome: list[Outcome] = []
    record = Record("tasks", 2, 42, b"k", json.dumps(body).encode())
    runner = threading.Thread(target=lambda: outcome.append(h.pipeline.run(record, ctx)), daemon=True)
    runner.start()
    wait_until(lambda: Stage.RETRY_WAIT in h.progress.stages, timeout=60, what="the task held for its budget")
    h.stopping.set()
    runner.join(timeout=60)
    assert outcome == [Outcome.HANDED_BACK]
    assert len(place.when("take")) == 1 and place.placed and h.model.calls == []
    assert h.progress.stages.index(Stage.WAITING_PLACE) < h.progress.stages.index(Stage.RETRY_WAIT)
