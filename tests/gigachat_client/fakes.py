"""Fakes for the GigaChat client's unit tests: a scripted HTTP session and a clock that sleeps instantly."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from llm_service.config import Settings

AUTH_URL = "https://auth.test/api/v2/oauth"
API_URL = "https://api.test/api/v1"
AUTH_KEY = "c2VjcmV0LWNsaWVudDpzZWNyZXQtcGFzc3dvcmQ="  # what must never appear in errors or logs


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "gigachat_auth_url": AUTH_URL,
        "gigachat_api_url": API_URL,
        "gigachat_auth_key": AUTH_KEY,
        "gigachat_timeout_s": 30.0,
        "gigachat_call_attempts": 4,
        "gigachat_backoff_base_s": 0.5,
        "gigachat_backoff_max_s": 8.0,
        "gigachat_max_concurrency": 4,
        "gigachat_limiter_dir": str(tmp_path / "limiter"),
    }
    values.update(overrides)
    return Settings(**values)


class FakeClock:
    """A monotonic clock whose sleep advances time instantly and records each pause."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> requests.Response:
    """A requests.Response as the transport would build it."""
    resp = requests.Response()
    resp.status_code = status
    resp.reason = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests"}.get(status, "Status")
    if isinstance(body, bytes | str):
        resp._content = body.encode() if isinstance(body, str) else body
    else:
        resp._content = json.dumps(body if body is not None else {}).encode()
    resp.headers = CaseInsensitiveDict({"Content-Type": "application/json", **(headers or {})})
    return resp


def token_response(value: str, lifetime_s: float = 1800.0) -> requests.Response:
    """An OAuth 200; with the tests' wall clock fixed at 0, ``expires_at`` is the lifetime in ms."""
    return response(200, {"access_token": value, "expires_at": int(lifetime_s * 1000)})


def wall_zero() -> float:
    return 0.0


def chat_body(content: str = "Привет", total: int = 12) -> dict[str, Any]:
    return {
        "choices": [
            {"message": {"role": "assistant", "content": content}, "index": 0, "finish_reason": "stop"}
        ],
        "created": 1,
        "model": "GigaChat:2.0.28.2",
        "object": "chat.completion",
        "usage": {"prompt_tokens": 5, "completion_tokens": total - 5, "total_tokens": total},
    }


@dataclass
class Sent:
    method: str
    url: str
    kwargs: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.kwargs.get("headers") or {})


Handler = Callable[[Sent], requests.Response]


@dataclass
class Script:
    """Answers per endpoint: a list consumed in order (the last repeats) or a function."""

    oauth: list[requests.Response | Exception] = field(default_factory=lambda: [token_response("tok-1")])
    api: list[requests.Response | Exception] = field(default_factory=lambda: [response(200, chat_body())])


class FakeSession(requests.Session):
    """A Session that never touches the network: it records requests and replays a Script."""

    def __init__(self, script: Script, *, on_send: Callable[[Sent], None] | None = None) -> None:
        super().__init__()
        self.script = script
        self.sent: list[Sent] = []
        self.on_send = on_send
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        sent = Sent(str(method), str(url), kwargs)
        with self._lock:
            self.sent.append(sent)
            queue = self.script.oauth if str(url).startswith(AUTH_URL) else self.script.api
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if self.on_send is not None:
            self.on_send(sent)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def to(self, prefix: str) -> list[Sent]:
        return [s for s in self.sent if s.url.startswith(prefix)]
