"""Results of GigaChat calls and the error codes the client puts on the TaskErrors it raises.

Parsing is lenient on purpose: real responses add keys over time (``precached_prompt_tokens``,
``system_tokens``, ``reasoning_content``) and ``object`` varies between models, so only what the
pipeline needs is read, and a missing usage block counts as zero tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_service.errors import TransientTaskError

# error.code values (docs/reference.md, "Error codes"), by HTTP outcome.
MODEL_BAD_REQUEST = "MODEL_BAD_REQUEST"  # 400
MODEL_INVALID_PARAMS = "MODEL_INVALID_PARAMS"  # 422: the server's "Invalid params: ..." (message kept)
# The prompt exceeds the model's context: found by counting before the call (context.py), or a 413
# answer to a chat call. Permanent: the same input never fits that model.
INPUT_TOO_LONG = "INPUT_TOO_LONG"
MODEL_PAYMENT_REQUIRED = "MODEL_PAYMENT_REQUIRED"  # 402
MODEL_FORBIDDEN = "MODEL_FORBIDDEN"  # 403
MODEL_NOT_FOUND = "MODEL_NOT_FOUND"  # 404
MODEL_PAYLOAD_TOO_LARGE = "MODEL_PAYLOAD_TOO_LARGE"  # 413 to a file upload
MODEL_REJECTED = "MODEL_REJECTED"  # any other 4xx
MODEL_RATE_LIMITED = "MODEL_RATE_LIMITED"  # 429 after retries
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"  # 5xx, connection errors after retries
MODEL_TIMEOUT = "MODEL_TIMEOUT"  # read/connect timeouts after retries, or no time left
MODEL_BAD_RESPONSE = "MODEL_BAD_RESPONSE"  # a 200 whose body is not the JSON we expect
MODEL_BUSY = "MODEL_BUSY"  # no host-wide call slot became free before the deadline
# The OAuth endpoint rejected the authorization key (or the API rejected a fresh token). Permanent
# for the task, and a broken interface for the worker: every other task will fail the same way.
AUTH_FAILED = "AUTH_FAILED"
AUTH_UNAVAILABLE = "AUTH_UNAVAILABLE"  # OAuth endpoint: 429, 5xx, connection errors after retries

# Failures after which a chat call moves on to the model's fallback (GIGACHAT_FALLBACK_MODELS): the
# model refused for load (429) or is down (5xx, unreachable) past the retry budget. An open breaker
# (BreakerOpenError) moves on too.
FALLBACK_CODES = frozenset({MODEL_RATE_LIMITED, MODEL_UNAVAILABLE})

PERMANENT_BY_STATUS: Mapping[int, str] = {
    400: MODEL_BAD_REQUEST,
    402: MODEL_PAYMENT_REQUIRED,
    403: MODEL_FORBIDDEN,
    404: MODEL_NOT_FOUND,
    413: MODEL_PAYLOAD_TOO_LARGE,
    422: MODEL_INVALID_PARAMS,
}


@dataclass(frozen=True)
class ChatResult:
    """One non-streaming chat completion: the first choice, the usage, and the body as received."""

    content: str
    finish_reason: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    raw: dict[str, Any]

    @classmethod
    def from_response(cls, body: Any, *, requested_model: str) -> ChatResult:
        """Build a result from a decoded 200 body; raise TransientTaskError if it has no answer.

        A 200 without ``choices`` is what a misbehaving proxy returns, not a verdict on the task,
        hence transient.
        """
        choice = _first_choice(body)
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        total = _int(usage.get("total_tokens")) or prompt + completion
        return cls(
            content=content if isinstance(content, str) else "",
            finish_reason=str(choice.get("finish_reason") or "stop"),
            model=str(body.get("model") or requested_model),
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            raw=body,
        )


def _first_choice(body: Any) -> dict[str, Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TransientTaskError("GigaChat answered 200 without choices", code=MODEL_BAD_RESPONSE)
    return choices[0]


def _int(value: Any) -> int:
    # bool is an int subclass; a JSON true is not a token count.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
