"""The task message of docs/reference.md, validated into a :class:`TaskSpec` or a :class:`Rejected`.

Pure functions, called from task threads. Nothing here touches the network: whether the input
object exists is the storage's question, asked later.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llm_service.config import Settings
from llm_service.errors import PermanentTaskError
from llm_worker import error_codes as codes

TASK_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ROLES = frozenset({"system", "user", "assistant"})
# Model parameters a task may set, with the check of each value. Unknown ones are rejected rather
# than forwarded: a typo such as "max_token" would otherwise be ignored by the model silently.
PARAMS: Mapping[str, tuple[type[int] | tuple[type[int], type[float]], float, float]] = {
    "temperature": ((int, float), 0.0, 2.0),
    "top_p": ((int, float), 0.0, 1.0),
    "max_tokens": (int, 1, 1_000_000),
    "repetition_penalty": ((int, float), 0.0, 10.0),
}
# Not sent to the model: false keeps the task on its own model (no GIGACHAT_FALLBACK_MODELS chain).
FALLBACK_PARAM = "fallback"
MAX_MODEL_NAME = 128
MAX_READABLE_TASK_ID = 1024
# Deeper JSON is no task anyone writes; it would only overflow the stack when echoed (json.dumps of a
# status event or result object recurses once per level, on top of the task thread's own frames).
MAX_NESTING = 64
# Python refuses to convert longer digit strings (ValueError); a task never needs one.
MAX_INT_DIGITS = 4300


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str

    def final_marker(self) -> ObjectRef:
        """For a result object: where the worker notes that the task's final status is acknowledged.

        Keyed by the result's location, like the result-exists check, so two tasks that share a
        task_id but write to different places (another MINIO_OUTPUT_PREFIX) never meet.
        """
        return ObjectRef(self.bucket, f"{FINAL_MARKER_PREFIX}{self.key}")

    def as_dict(self) -> dict[str, str]:
        return {"bucket": self.bucket, "key": self.key}


# Keys under this prefix belong to the service, not to tasks: no task may read or write there.
SERVICE_PREFIX = ".llm-service/"
FINAL_MARKER_PREFIX = f"{SERVICE_PREFIX}final/"


@dataclass(frozen=True)
class TaskRules:
    """What a task may ask for, taken from the settings once per worker."""

    max_message_bytes: int
    allowed_input_buckets: frozenset[str]
    input_bucket: str
    output_bucket: str
    output_prefix: str
    default_model: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskRules:
        return cls(
            max_message_bytes=settings.task_max_message_bytes,
            allowed_input_buckets=settings.allowed_input_buckets(),
            input_bucket=settings.minio_input_bucket,
            output_bucket=settings.minio_output_bucket,
            output_prefix=settings.minio_output_prefix,
            default_model=settings.gigachat_model,
        )


@dataclass(frozen=True)
class TaskSpec:
    """A valid task. ``messages`` is the chat form; a plain ``prompt`` becomes one user message later."""

    task_id: str
    prompt: str | None
    messages: tuple[dict[str, str], ...]
    input: ObjectRef | None
    model: str
    params: dict[str, Any]
    output: ObjectRef
    metadata: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Rejected:
    """A message that is not a valid task; ``task_id`` is set when the message had a usable one."""

    error: PermanentTaskError
    task_id: str | None
    metadata: dict[str, Any] | None


def parse_task(raw: bytes | None, rules: TaskRules) -> TaskSpec | Rejected:
    """Validate one message value against the schema of docs/reference.md. Never raises on any input bytes."""
    size = len(raw or b"")
    body, json_error = _load(raw)
    unfit = None if json_error is not None else unfit_value(body)
    task_id, metadata = _identity(body)
    if unfit is not None:
        metadata = None  # never echo what cannot be encoded again
    if size > rules.max_message_bytes:
        error = PermanentTaskError(
            f"message is {size} bytes, over the limit of {rules.max_message_bytes}",
            code=codes.MESSAGE_TOO_LARGE,
        )
        return Rejected(error, task_id, metadata)
    if json_error is not None:
        return Rejected(PermanentTaskError(json_error, code=codes.INVALID_JSON), None, None)
    if unfit is not None:
        return Rejected(_invalid(unfit), task_id, None)
    try:
        return _build(body, rules)
    except PermanentTaskError as exc:
        return Rejected(exc, task_id, metadata)


def readable_task_id(raw: bytes | None) -> str | None:
    """The task id a message names, if readable: for the pipeline's last resort after a bug."""
    try:
        body, _ = _load(raw)
        return _identity(body)[0]
    except (ValueError, TypeError, RecursionError):
        return None


@dataclass(frozen=True)
class _Unfit:
    """Stands in for a JSON number or constant the service will not carry (found by unfit_value)."""

    what: str


def _int(text: str) -> int | _Unfit:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Unfit(f"an integer of {len(text)} digits")
    return int(text)


def _float(text: str) -> float | _Unfit:
    value = float(text)
    return value if math.isfinite(value) else _Unfit(f"the number {text[:40]} (not a finite float)")


def _constant(name: str) -> _Unfit:
    return _Unfit(f"{name} (not JSON)")


def _load(raw: bytes | None) -> tuple[Any, str | None]:
    if raw is None:
        return None, "the message has no value"
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant), None
    except UnicodeDecodeError as exc:
        return None, f"the message is not UTF-8: {exc.reason} at byte {exc.start}"
    except json.JSONDecodeError as exc:
        return None, f"the message is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:  # what the hooks leave to json itself, should a Python version differ
        return None, f"the message is not JSON: {exc}"
    except RecursionError:
        return None, "the message is JSON nested too deeply to read"


def unfit_value(body: Any) -> str | None:
    """Why a parsed message cannot be carried further, or None: nesting over MAX_NESTING levels, a
    number Python or JSON cannot hold, a string (or key) with a lone surrogate, which UTF-8 cannot
    encode. Iterative, so a deep body cannot overflow the stack here."""
    pending: list[tuple[Any, int]] = [(body, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_NESTING:
            return f"the task is nested more than {MAX_NESTING} levels deep"
        if isinstance(value, _Unfit):
            return f"the task holds {value.what}"
        if isinstance(value, str) and not _encodable(value):
            return f"the task holds a lone surrogate in the string {value[:40]!a}"
        if isinstance(value, dict):
            bad_key = next((k for k in value if not _encodable(k)), None)
            if bad_key is not None:
                return f"the task holds a lone surrogate in the key {bad_key[:40]!a}"
            pending.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            pending.extend((v, depth + 1) for v in value)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _identity(body: Any) -> tuple[str | None, dict[str, Any] | None]:
    """The task id and metadata of a message, if readable: a failure status can then name the task.

    A task id that breaks the format rules but is a short string still names the task in its FAILED
    status: whoever sent "report 1" waits for "report 1", and should hear that it failed and why.
    One that UTF-8 cannot encode (a lone surrogate) names nothing: it could not be a Kafka key.
    """
    if not isinstance(body, dict):
        return None, None
    task_id = body.get("task_id")
    metadata = body.get("metadata")
    readable = isinstance(task_id, str) and 0 < len(task_id) <= MAX_READABLE_TASK_ID and _encodable(task_id)
    return (task_id if readable else None, metadata if isinstance(metadata, dict) else None)


def _invalid(message: str, code: str = codes.INVALID_TASK) -> PermanentTaskError:
    return PermanentTaskError(message, code=code)


def _build(body: Any, rules: TaskRules) -> TaskSpec:
    if not isinstance(body, dict):
        raise _invalid(f"a task is a JSON object, not {type(body).__name__}")
    task_id = _task_id(body)
    prompt = _prompt(body)
    messages = _messages(body)
    if prompt is None and not messages:
        raise _invalid("a task needs a non-empty 'prompt' or 'messages'")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("'metadata' must be an object")
    return TaskSpec(
        task_id=task_id,
        prompt=prompt,
        messages=messages,
        input=_input(body, rules),
        model=_model(body, rules),
        params=_params(body),
        output=_output(body, task_id, rules),
        metadata=metadata,
    )


def _task_id(body: dict[str, Any]) -> str:
    if "task_id" not in body:
        raise _invalid("'task_id' is required")
    task_id = body["task_id"]
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        shown = repr(task_id)[:80]
        raise _invalid(
            f"'task_id' must be 1-128 characters of [A-Za-z0-9._:-], got {shown}", codes.INVALID_TASK_ID
        )
    return task_id


def _prompt(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    if prompt is None:
        return None
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("'prompt' must be a non-empty string")
    return prompt


def _messages(body: dict[str, Any]) -> tuple[dict[str, str], ...]:
    messages = body.get("messages")
    if messages is None:
        return ()
    if not isinstance(messages, list):
        raise _invalid("'messages' must be a list")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{i}] must be an object")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise _invalid(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise _invalid(f"messages[{i}].content must be a string")
        checked.append({"role": role, "content": content})
    return tuple(checked)


def _ref(body: dict[str, Any], name: str, default_bucket: str) -> ObjectRef | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"'{name}' must be an object with 'bucket' and 'key'")
    bucket, key = value.get("bucket", default_bucket), value.get("key")
    if not isinstance(bucket, str) or not bucket:
        raise _invalid(f"'{name}.bucket' must be a non-empty string")
    if not isinstance(key, str) or not key or key.startswith("/") or len(key.encode()) > 1024:
        raise _invalid(f"'{name}.key' must be a non-empty relative object key")
    _check_key(key, f"'{name}.key'")
    return ObjectRef(bucket, key)


def _check_key(key: str, what: str) -> None:
    """No path tricks and nothing of the service's own: S3 servers on a filesystem (MinIO) resolve
    ``..``, and the final-status markers under FINAL_MARKER_PREFIX must stay out of a task's reach."""
    if any(part in (".", "..") for part in key.split("/")):
        raise _invalid(f"{what} must not have '.' or '..' segments", codes.KEY_NOT_ALLOWED)
    if key.startswith(SERVICE_PREFIX):
        raise _invalid(
            f"{what} must not be under the service's own {SERVICE_PREFIX!r}", codes.KEY_NOT_ALLOWED
        )


def _input(body: dict[str, Any], rules: TaskRules) -> ObjectRef | None:
    ref = _ref(body, "input", rules.input_bucket)
    if ref is not None and ref.bucket not in rules.allowed_input_buckets:
        raise _invalid(
            f"input bucket {ref.bucket!r} is not an allowed input bucket", codes.BUCKET_NOT_ALLOWED
        )
    return ref


def _output(body: dict[str, Any], task_id: str, rules: TaskRules) -> ObjectRef:
    ref = _ref(body, "output", rules.output_bucket)
    if ref is None:
        default = ObjectRef(rules.output_bucket, f"{rules.output_prefix}{task_id}.json")
        _check_key(default.key, "the default output key")
        return default
    # Results go to the service's own bucket only: a task must not write over other buckets' data.
    if ref.bucket != rules.output_bucket:
        raise _invalid(
            f"output bucket {ref.bucket!r} is not {rules.output_bucket!r}", codes.BUCKET_NOT_ALLOWED
        )
    return ref


def _model(body: dict[str, Any], rules: TaskRules) -> str:
    model = body.get("model")
    if model is None:
        return rules.default_model
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_NAME:
        raise _invalid("'model' must be a non-empty string")
    return model


def _params(body: dict[str, Any]) -> dict[str, Any]:
    params = body.get("params")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _invalid("'params' must be an object")
    for name, value in params.items():
        if name == FALLBACK_PARAM:
            if not isinstance(value, bool):
                raise _invalid(f"params.{FALLBACK_PARAM} must be true or false")
            continue
        if name not in PARAMS:
            known = ", ".join([*PARAMS, FALLBACK_PARAM])
            raise _invalid(f"unknown model parameter {name!r}; known: {known}")
        kind, low, high = PARAMS[name]
        # Compared as they are: float() of a huge integer would raise OverflowError.
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            raise _invalid(f"params.{name} must be a number in [{low:g}, {high:g}]")
    return dict(params)
