"""Fallback models and the context check, on the real stack (docs/gigachat-client.md).

A model's outage in the emulator moves tasks to its fallback model, unless a task forbids it; an input
over the model's context fails INPUT_TOO_LONG without any chat call reaching the emulator.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.waiting import wait_until
from tests.worker.conftest import Testbed
from tests.worker.harness import send, task_bytes

pytestmark = pytest.mark.stack

CHAT = "/api/v1/chat/completions"
COUNT = "/api/v1/tokens/count"
PRIMARY, FALLBACK = "GigaChat-2-Max", "GigaChat-2-Pro"


def _send(bed: Testbed, task_id: str, **fields: Any) -> str:
    send(bed.producer, bed.names.tasks, task_bytes(task_id, **fields), key=task_id.encode())
    return task_id


def _chat_models(bed: Testbed, task_id: str) -> list[tuple[str | None, int]]:
    return [(c["model"], c["status"]) for c in bed.emulator.calls(task_id) if c["endpoint"] == CHAT]


def test_a_model_outage_moves_tasks_to_the_fallback_model_unless_forbidden(bed: Testbed) -> None:
    bed.emulator.model_outage(PRIMARY, 300)
    status_log = bed.status_log()
    env = bed.env(
        GIGACHAT_FALLBACK_MODELS=f"{PRIMARY}={FALLBACK},GigaChat-2",
        GIGACHAT_CALL_ATTEMPTS="2",
        GIGACHAT_BACKOFF_BASE_S="0.05",
        GIGACHAT_BACKOFF_MAX_S="0.2",
        GIGACHAT_BREAKER_FAIL_MAX="3",
        GIGACHAT_BREAKER_RESET_S="10",
    )
    worker = bed.start_worker(env).started()
    moved = [_send(bed, f"moved-{i}", prompt="Summarise", model=PRIMARY) for i in range(4)]

    finals = status_log.wait_finals(moved, timeout=120)
    for task_id in moved:
        (final,) = finals[task_id]
        assert final["status_name"] == "COMPLETED", final
        assert final["model"].split(":")[0] == FALLBACK  # the COMPLETED event says who answered
        assert {model for model, _ in _chat_models(bed, task_id)} <= {PRIMARY, FALLBACK}
    assert any((PRIMARY, 503) in _chat_models(bed, t) for t in moved)  # tried first, refused
    worker.wait_for_log(f"Circuit breaker OPEN for model {PRIMARY}", timeout=30)
    # With the primary's breaker open, a new task goes straight to the fallback: nothing sent to the primary.
    later = _send(bed, "later", prompt="Summarise", model=PRIMARY)
    (final,) = status_log.wait_finals([later], timeout=60)[later]
    assert final["model"].split(":")[0] == FALLBACK
    assert _chat_models(bed, later) == [(FALLBACK, 200)]

    stays = _send(bed, "stays", prompt="Summarise", model=PRIMARY, params={"fallback": False})
    # The task that forbade fallback keeps waiting for its own model: calls to it only, never the fallback.
    wait_until(lambda: (PRIMARY, 503) in _chat_models(bed, stays), timeout=60, what="the primary refused")
    assert stays not in status_log.finals()
    bed.emulator.model_outage(PRIMARY, 0)
    (final,) = status_log.wait_finals([stays], timeout=120)[stays]
    assert final["status_name"] == "COMPLETED" and final["model"].split(":")[0] == PRIMARY
    assert {model for model, _ in _chat_models(bed, stays)} == {PRIMARY}


def test_an_over_long_input_fails_input_too_long_without_a_chat_call(bed: Testbed) -> None:
    status_log = bed.status_log()
    env = bed.env(GIGACHAT_CONTEXT_LENGTHS="GigaChat=300")
    bed.start_worker(env).started()
    long_prompt = " ".join(f"word{i}" for i in range(400))  # ~400 words: well over 300 tokens
    too_long = _send(bed, "too-long", prompt=long_prompt)
    short = _send(bed, "short", prompt="Summarise this")

    finals = status_log.wait_finals([too_long, short], timeout=120)

    (failed,) = finals[too_long]
    assert failed["status_name"] == "FAILED" and failed["error"]["code"] == "INPUT_TOO_LONG"
    assert "300 tokens" in failed["error"]["message"] and "the input is" in failed["error"]["message"]
    endpoints = [c["endpoint"] for c in bed.emulator.calls(too_long)]
    assert endpoints == [COUNT]  # counted once, never sent to the model (nothing billed)
    assert finals[short][0]["status_name"] == "COMPLETED"
    # A short input cannot exceed the context: it is not counted at all.
    assert [c["endpoint"] for c in bed.emulator.calls(short)] == [CHAT]
