"""Chat completions without I/O: request validation, the deterministic answer, JSON and SSE bodies.

Validation follows the fact sheet §2 (422 ``Invalid params: ...`` for bad parameters, 404 ``No such model``).
The answer is invented: a short summary-like text built from a hash of the request plus the first words of
the last user message, so equal requests get equal answers and different requests different ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from gigachat_emulator.catalog import ModelInfo, find_model
from gigachat_emulator.errors import ApiError
from gigachat_emulator.tokenizer import count_tokens, truncate_to_tokens
from gigachat_emulator.wire import encode_json

ROLES = frozenset({"system", "user", "assistant", "function", "search_result", "function_in_progress"})
# Role markers the model sees around each message; charged like the real service charges its template.
MESSAGE_OVERHEAD_TOKENS = 3
_HEAD_WORDS = 8
_WORDS_PER_CHUNK = 3
_VOCABULARY = (
    "the", "summary", "covers", "key", "points", "of", "request", "main", "topic", "is", "described",
    "briefly", "with", "relevant", "details", "and", "a", "clear", "conclusion", "text", "notes", "data",
    "shows", "that", "result", "depends", "on", "context", "overall", "answer", "section", "review",
)  # fmt: skip


@dataclass(frozen=True)
class Message:
    """One validated input message."""

    role: str
    content: str
    attachments: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    """A validated ``POST /chat/completions`` body."""

    model: ModelInfo
    messages: tuple[Message, ...]
    stream: bool = False
    max_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    """The generated answer and its usage."""

    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion, as in every recorded example (sheet §2)."""
        return self.prompt_tokens + self.completion_tokens


def _invalid(detail: str) -> ApiError:
    return ApiError(422, f"Invalid params: {detail}")


def parse_chat_request(payload: object) -> ChatRequest:
    """Validate a decoded request body; raises ``ApiError`` (400, 404 or 422) on the first problem."""
    if not isinstance(payload, dict):
        raise ApiError(400, "Invalid JSON body: expected an object")
    model = _parse_model(payload.get("model"))
    messages = _parse_messages(payload.get("messages"))
    _check_sampling(payload)
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream must be a boolean")
    return ChatRequest(model, messages, stream, _optional_positive_int(payload, "max_tokens"))


def parse_model_name(value: object) -> ModelInfo:
    """Return the known model named ``value``; raises 422 when missing, 404 ``No such model`` when unknown."""
    if not isinstance(value, str) or not value:
        raise _invalid("model is required")
    model = find_model(value)
    if model is None:
        raise ApiError(404, "No such model")
    return model


def _parse_model(value: object) -> ModelInfo:
    model = parse_model_name(value)
    if model.type != "chat":
        # The real answer for a non-chat model here is unrecorded; 404 keeps clients on a known path.
        raise ApiError(404, "No such model")
    return model


def _parse_messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _invalid("messages must be a non-empty list")
    messages = tuple(_parse_message(index, item) for index, item in enumerate(value))
    for index, message in enumerate(messages):
        if message.role == "system" and index != 0:
            raise _invalid("system message must be the first message")
    return messages


def _parse_message(index: int, item: object) -> Message:
    if not isinstance(item, dict):
        raise _invalid(f"messages[{index}] must be an object")
    role = item.get("role")
    if role not in ROLES:
        raise _invalid(f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}")
    content = item.get("content", "")
    if not isinstance(content, str):
        raise _invalid(f"messages[{index}].content must be a string")
    attachments = item.get("attachments", [])
    if not isinstance(attachments, list) or not all(isinstance(a, str) for a in attachments):
        raise _invalid(f"messages[{index}].attachments must be a list of file ids")
    return Message(str(role), content, tuple(attachments))


def _check_sampling(payload: dict[str, object]) -> None:
    temperature = _optional_number(payload, "temperature")
    if temperature is not None and temperature <= 0:
        raise _invalid("temperature must be in range (0, +inf)")
    top_p = _optional_number(payload, "top_p")
    if top_p is not None and not 0 <= top_p <= 1:
        raise _invalid("top_p must be in range [0, 1]")
    penalty = _optional_number(payload, "repetition_penalty")
    if penalty is not None and penalty <= 0:
        raise _invalid("repetition_penalty must be in range (0, +inf)")
    interval = _optional_number(payload, "update_interval")
    if interval is not None and interval < 0:
        raise _invalid("update_interval must be in range [0, +inf)")


def _optional_number(payload: dict[str, object], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{name} must be a number")
    return float(value)


def _optional_positive_int(payload: dict[str, object], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(f"{name} must be a positive integer")
    return value


def request_digest(request: ChatRequest, attachment_digest: str = "") -> str:
    """Return a stable hex digest of everything that determines the answer."""
    messages = [[m.role, m.content, list(m.attachments)] for m in request.messages]
    canonical = json.dumps([request.model.id, messages, attachment_digest], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def answer_text(request: ChatRequest, digest: str) -> str:
    """Return the full deterministic answer for a request with the given digest."""
    users = [m.content for m in request.messages if m.role == "user"] or [request.messages[-1].content]
    head = " ".join(users[-1].split()[:_HEAD_WORDS])
    stream = hashlib.sha256(digest.encode("ascii")).digest() * 2
    length = 12 + stream[0] % 29
    words = [_VOCABULARY[byte % len(_VOCABULARY)] for byte in stream[1 : 1 + length]]
    return f'Emulated answer {digest[:8]} to "{head}": {" ".join(words).capitalize()}.'


def complete(request: ChatRequest, *, attachment_tokens: int = 0, attachment_digest: str = "") -> Completion:
    """Generate the answer, apply ``max_tokens`` (finish_reason ``length``) and count usage."""
    text = answer_text(request, request_digest(request, attachment_digest))
    finish_reason = "stop"
    if request.max_tokens is not None and count_tokens(text) > request.max_tokens:
        text = truncate_to_tokens(text, request.max_tokens)
        finish_reason = "length"
    return Completion(text, finish_reason, prompt_tokens(request, attachment_tokens), count_tokens(text))


def prompt_tokens(request: ChatRequest, attachment_tokens: int = 0) -> int:
    """Return the prompt size: message texts, per-message overhead and attached files."""
    text_tokens = sum(count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)
    return text_tokens + attachment_tokens


def usage_json(completion: Completion) -> dict[str, int]:
    """Return the ``usage`` object."""
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.total_tokens,
        "precached_prompt_tokens": 0,
    }


def completion_json(request: ChatRequest, completion: Completion, created: int) -> dict[str, object]:
    """Return the non-streaming answer body (sheet §2, recorded ``test_chat_simple``)."""
    message = {"content": completion.content, "role": "assistant"}
    return {
        "choices": [{"message": message, "index": 0, "finish_reason": completion.finish_reason}],
        "created": created,
        "model": request.model.versioned_name,
        "object": "chat.completion",
        "usage": usage_json(completion),
    }


def content_pieces(content: str) -> list[str]:
    """Split the answer into the deltas a stream sends (a few words each, whitespace kept)."""
    words = re.findall(r"\S+\s*", content)
    pieces = ["".join(words[i : i + _WORDS_PER_CHUNK]) for i in range(0, len(words), _WORDS_PER_CHUNK)]
    return pieces or [content]


def stream_events(
    request: ChatRequest, completion: Completion, created: int, *, per_token_s: float = 0.0
) -> Iterator[tuple[float, bytes]]:
    """Yield ``(delay, event_bytes)`` of the SSE body, byte-compatible with ``test_stream_simple``.

    Each content delta waits ``per_token_s`` per token it carries; the role is only in the first delta;
    the penultimate event has empty content, the finish_reason and usage; the last is ``data: [DONE]``.
    """
    envelope = {"created": created, "model": request.model.versioned_name, "object": "chat.completion"}
    for index, piece in enumerate(content_pieces(completion.content)):
        delta = {"content": piece, "role": "assistant"} if index == 0 else {"content": piece}
        event = {"choices": [{"delta": delta, "index": 0}], **envelope}
        yield per_token_s * count_tokens(piece), _sse(encode_json(event))
    final_choice = {"delta": {"content": ""}, "index": 0, "finish_reason": completion.finish_reason}
    final = {"choices": [final_choice], **envelope, "usage": usage_json(completion)}
    yield 0.0, _sse(encode_json(final))
    yield 0.0, _sse(b"[DONE]")


def _sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"
