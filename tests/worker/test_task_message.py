"""Validation of task messages against docs/reference.md ("Task message")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_worker.task_message import ObjectRef, Rejected, TaskRules, TaskSpec, parse_task

RULES = TaskRules(
    max_message_bytes=10_000,
    allowed_input_buckets=frozenset({"llm-input", "shared"}),
    input_bucket="llm-input",
    output_bucket="llm-output",
    output_prefix="results/",
    default_model="GigaChat",
)


def parse(body: Any) -> TaskSpec | Rejected:
    return parse_task(json.dumps(body).encode(), RULES)


def rejected(body: Any) -> Rejected:
    result = parse(body) if not isinstance(body, bytes) else parse_task(body, RULES)
    assert isinstance(result, Rejected), result
    return result


def test_a_full_task_is_accepted_with_defaults_filled_in() -> None:
    spec = parse(
        {
            "task_id": "a-1",
            "prompt": "Summarise",
            "input": {"bucket": "shared", "key": "docs/a.txt"},
            "params": {"temperature": 0.2, "max_tokens": 512},
            "metadata": {"k": "v"},
            "extra": 1,
        }
    )
    assert isinstance(spec, TaskSpec)
    assert spec.input == ObjectRef("shared", "docs/a.txt")
    assert spec.output == ObjectRef("llm-output", "results/a-1.json")
    assert spec.model == "GigaChat" and spec.params == {"temperature": 0.2, "max_tokens": 512}
    assert spec.metadata == {"k": "v"}


def test_messages_form_and_defaults() -> None:
    spec = parse(
        {
            "task_id": "m:1.x_y-z",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "input": {"key": "k.txt"},
            "output": {"key": "custom/out.json"},
            "model": "GigaChat-Pro",
        }
    )
    assert isinstance(spec, TaskSpec)
    assert spec.prompt is None and len(spec.messages) == 2
    assert spec.input == ObjectRef("llm-input", "k.txt") and spec.output == ObjectRef(
        "llm-output", "custom/out.json"
    )


@pytest.mark.parametrize(
    ("raw", "code", "task_id"),
    [
        (b"not json", "INVALID_JSON", None),
        (b"\xff\xfe{}", "INVALID_JSON", None),
        (b"[1, 2]", "INVALID_TASK", None),
        (b'{"prompt": "x"}', "INVALID_TASK", None),
        (b'{"task_id": "", "prompt": "x"}', "INVALID_TASK_ID", None),
        (b'{"task_id": "has space", "prompt": "x"}', "INVALID_TASK_ID", "has space"),
        (json.dumps({"task_id": "x" * 129, "prompt": "x"}).encode(), "INVALID_TASK_ID", "x" * 129),
        (b'{"task_id": 5, "prompt": "x"}', "INVALID_TASK_ID", None),
        (b'{"task_id": "t1"}', "INVALID_TASK", "t1"),
        (b'{"task_id": "t1", "prompt": "  "}', "INVALID_TASK", "t1"),
        (b'{"task_id": "t1", "messages": [{"role": "bot", "content": "x"}]}', "INVALID_TASK", "t1"),
        (
            b'{"task_id": "t1", "prompt": "x", "input": {"bucket": "secret", "key": "a"}}',
            "BUCKET_NOT_ALLOWED",
            "t1",
        ),
        (
            b'{"task_id": "t1", "prompt": "x", "output": {"bucket": "other", "key": "a"}}',
            "BUCKET_NOT_ALLOWED",
            "t1",
        ),
        (b'{"task_id": "t1", "prompt": "x", "input": {"key": "/abs"}}', "INVALID_TASK", "t1"),
        (b'{"task_id": "t1", "prompt": "x", "params": {"max_token": 5}}', "INVALID_TASK", "t1"),
        (b'{"task_id": "t1", "prompt": "x", "params": {"temperature": "hot"}}', "INVALID_TASK", "t1"),
        (b'{"task_id": "t1", "prompt": "x", "metadata": [1]}', "INVALID_TASK", "t1"),
    ],
)
def test_invalid_messages_get_precise_codes(raw: bytes, code: str, task_id: str | None) -> None:
    result = rejected(raw)
    assert result.error.code == code
    assert result.task_id == task_id
    assert str(result.error)


def test_oversized_message_keeps_its_task_id_and_metadata() -> None:
    raw = json.dumps({"task_id": "big", "prompt": "x" * 20_000, "metadata": {"m": 1}}).encode()
    result = rejected(raw)
    assert (result.error.code, result.task_id, result.metadata) == ("MESSAGE_TOO_LARGE", "big", {"m": 1})


def test_none_value_is_invalid_json() -> None:
    result = parse_task(None, RULES)
    assert isinstance(result, Rejected) and result.error.code == "INVALID_JSON"


# Issue 7: each of these raised out of the parser (or later, when the status was encoded) before.
@pytest.mark.parametrize(
    ("raw", "code", "task_id"),
    [
        (b"[" * 4000 + b"]" * 4000, "INVALID_JSON", None),  # RecursionError
        (
            b'{"task_id": "n1", "prompt": "x", "metadata": ' + b"[" * 80 + b"]" * 80 + b"}",
            "INVALID_TASK",
            "n1",
        ),
        (
            b'{"task_id": "b1", "prompt": "x", "params": {"max_tokens": ' + b"9" * 5000 + b"}}",
            "INVALID_TASK",
            "b1",
        ),
        (
            b'{"task_id": "o1", "prompt": "x", "params": {"temperature": ' + b"9" * 400 + b"}}",
            "INVALID_TASK",
            "o1",
        ),
        (b'{"task_id": "f1", "prompt": "x", "metadata": {"v": 1e999}}', "INVALID_TASK", "f1"),
        (b'{"task_id": "c1", "prompt": "x", "metadata": {"v": NaN}}', "INVALID_TASK", "c1"),
        (b'{"task_id": "\\ud800", "prompt": "x"}', "INVALID_TASK", None),
        (b'{"task_id": "s1", "prompt": "x", "metadata": {"\\udfff": 1}}', "INVALID_TASK", "s1"),
        (b'{"task_id": "s2", "prompt": "\\udc00"}', "INVALID_TASK", "s2"),
        (b'{"task_id": "r1", "messages": [{"role": ["user"], "content": "x"}]}', "INVALID_TASK", "r1"),
    ],
)
def test_inputs_that_used_to_raise_are_rejected(raw: bytes, code: str, task_id: str | None) -> None:
    result = rejected(raw)
    assert (result.error.code, result.task_id, result.metadata) == (code, task_id, None)


@pytest.mark.parametrize(
    "ref",
    [
        {"input": {"key": "docs/../../other/secret.txt"}},
        {"input": {"key": "../x.txt"}},
        {"input": {"key": "a/./b.txt"}},
        {"input": {"key": ".llm-service/final/results/t1.json"}},
        {"output": {"key": ".llm-service/final/results/other.json"}},
        {"output": {"key": "results/../../x.json"}},
    ],
)
def test_path_tricks_and_the_service_prefix_are_not_allowed_keys(ref: dict[str, Any]) -> None:
    result = rejected({"task_id": "t1", "prompt": "x", **ref})
    assert (result.error.code, result.task_id) == ("KEY_NOT_ALLOWED", "t1")


def test_keys_with_dots_inside_names_are_fine() -> None:
    spec = parse({"task_id": "t1", "prompt": "x", "input": {"key": "a..b/.hidden/v1.2..txt"}})
    assert isinstance(spec, TaskSpec) and spec.input == ObjectRef("llm-input", "a..b/.hidden/v1.2..txt")
