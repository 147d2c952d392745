"""A corpus of malformed task messages: the known ways in (issue 7) and their neighbours.

Used by the real-stack mixed-traffic test and as explicit examples of the fuzz tests. Every message
is unique (it carries its index), so a dead letter can be told from another. ``task_id`` is the id a
FAILED status must name, or None when the message names no readable task.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BadMessage:
    family: str
    task_id: str | None
    value: bytes | None


def _task(task_id: str, **fields: object) -> bytes:
    return json.dumps({"task_id": task_id, **fields}, ensure_ascii=False).encode()


def _deep_array(i: int) -> BadMessage:
    return BadMessage("deep-array", None, b"[" * 50_000 + str(i).encode() + b"]" * 50_000)


def _deep_metadata(i: int) -> BadMessage:
    value = b'{"task_id": "deep-%d", "prompt": "x", "metadata": ' % i + b'{"a": ' * 5_000
    return BadMessage("deep-metadata", None, value + b"1" + b"}" * 5_001)


def _nested_metadata(i: int) -> BadMessage:
    # Deep enough to overflow an echo serialised further down the stack, shallow enough to parse.
    body = b'{"task_id": "nest-%d", "prompt": "x", "metadata": ' % i + b"[" * 500 + b"]" * 500 + b"}"
    return BadMessage("nested-metadata", f"nest-{i}", body)


def _huge_int(i: int) -> BadMessage:
    value = b'{"task_id": "bigint-%d", "prompt": "x", "params": {"max_tokens": ' % i + b"9" * 5_000 + b"}}"
    return BadMessage("huge-int", f"bigint-{i}", value)


def _float_overflow(i: int) -> BadMessage:
    value = b'{"task_id": "ovf-%d", "prompt": "x", "params": {"temperature": ' % i + b"9" * 400 + b"}}"
    return BadMessage("float-overflow", f"ovf-{i}", value)


def _infinite_float(i: int) -> BadMessage:
    return BadMessage(
        "inf-float", f"inf-{i}", b'{"task_id": "inf-%d", "prompt": "x", "metadata": {"v": 1e999}}' % i
    )


def _nan(i: int) -> BadMessage:
    return BadMessage("nan", f"nan-{i}", b'{"task_id": "nan-%d", "prompt": "x", "metadata": {"v": NaN}}' % i)


def _surrogate_id(i: int) -> BadMessage:
    return BadMessage("surrogate-id", None, b'{"task_id": "sur\\ud800-%d", "prompt": "x"}' % i)


def _surrogate_metadata(i: int) -> BadMessage:
    value = b'{"task_id": "surm-%d", "prompt": "x", "metadata": {"k\\udfff": "\\udc00"}}' % i
    return BadMessage("surrogate-metadata", f"surm-{i}", value)


def _surrogate_prompt(i: int) -> BadMessage:
    return BadMessage("surrogate-prompt", f"surp-{i}", b'{"task_id": "surp-%d", "prompt": "\\ud83d"}' % i)


def _control_id(i: int) -> BadMessage:
    task_id = f"ctl\n{i}\x1b[31m\r\x00"
    return BadMessage("control-id", task_id, _task(task_id, prompt="x"))


def _unhashable_role(i: int) -> BadMessage:
    return BadMessage(
        "unhashable-role", f"role-{i}", _task(f"role-{i}", messages=[{"role": ["user"], "content": "x"}])
    )


def _odd_types(i: int) -> BadMessage:
    choices: list[dict[str, object]] = [
        {"prompt": {"x": 1}},
        {"prompt": "x", "input": ["a"]},
        {"prompt": "x", "params": [1]},
        {"prompt": "x", "params": {"temperature": True}},
        {"prompt": "x", "model": 7},
        {"prompt": "x", "output": "results/x.json"},
        {"messages": "hi"},
        {"prompt": "x", "metadata": [1, 2]},
    ]
    return BadMessage("odd-types", f"odd-{i}", _task(f"odd-{i}", **choices[i % len(choices)]))


def _odd_task_id(i: int) -> BadMessage:
    ids: list[object] = [i, [f"x{i}"], {"id": i}, None, True, 1.5 + i]
    return BadMessage("odd-task-id", None, json.dumps({"task_id": ids[i % len(ids)], "prompt": "x"}).encode())


def _dotdot_key(i: int) -> BadMessage:
    keys = [f"docs/../../secret-{i}.txt", f"../{i}.txt", f"a/./../{i}"]
    value = _task(f"dots-{i}", prompt="x", input={"bucket": "llm-input", "key": keys[i % len(keys)]})
    return BadMessage("dotdot-key", f"dots-{i}", value)


def _service_key(i: int) -> BadMessage:
    where = "input" if i % 2 else "output"
    value = _task(f"svc-{i}", prompt="x", **{where: {"key": f".llm-service/final/results/v-{i}.json"}})
    return BadMessage("service-key", f"svc-{i}", value)


def _long_echo(i: int) -> BadMessage:
    # ~200 KB of "1E15", each written back as "1000000000000000.0": a ~900 KB echo per status.
    metadata = b"[" + b",".join([b"1E15"] * 40_000) + b"]"
    value = b'{"task_id": "echo-%d", "prompt": "x", "params": {"top_p": 5}, "metadata": {"v": ' % i
    return BadMessage("long-echo", f"echo-{i}", value + metadata + b"}}")


def _random_bytes(i: int) -> BadMessage:
    rng = random.Random(i)
    return BadMessage("random-bytes", None, b"\xff%d" % i + rng.randbytes(rng.randrange(1, 200)))


def _tombstone(i: int) -> BadMessage:
    return BadMessage("no-value", None, None)


FAMILIES: tuple[Callable[[int], BadMessage], ...] = (
    _deep_array,
    _deep_metadata,
    _nested_metadata,
    _huge_int,
    _float_overflow,
    _infinite_float,
    _nan,
    _surrogate_id,
    _surrogate_metadata,
    _surrogate_prompt,
    _control_id,
    _unhashable_role,
    _odd_types,
    _odd_task_id,
    _dotdot_key,
    _service_key,
    _random_bytes,
    _tombstone,
)


def corpus(n: int, *, long_echoes: int = 2) -> list[BadMessage]:
    """``n`` bad messages cycling through the families, plus ``long_echoes`` big-echo ones."""
    found = [FAMILIES[i % len(FAMILIES)](i) for i in range(n)]
    return found + [_long_echo(i) for i in range(long_echoes)]
