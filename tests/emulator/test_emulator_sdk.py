"""The emulator driven by the official ``gigachat`` SDK (0.2.3) as the client, over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from gigachat import GigaChat
from gigachat.context import request_id_cvar
from gigachat.exceptions import AuthenticationError, NotFoundError, RateLimitError

from tests.waiting import wait_until

from .conftest import EmulatorProcess

PROMPT = {"model": "GigaChat", "messages": [{"role": "user", "content": "Summarise the meeting notes"}]}


def sdk_client(emulator: EmulatorProcess, **overrides: object) -> GigaChat:
    settings: dict[str, object] = {
        "base_url": emulator.api_url,
        "auth_url": emulator.auth_url,
        "credentials": emulator.auth_key,
        "model": "GigaChat",
        "verify_ssl_certs": False,
        "timeout": 30.0,
    }
    return GigaChat(**(settings | overrides))  # type: ignore[arg-type]


@pytest.fixture
def client(emulator: EmulatorProcess) -> Iterator[GigaChat]:
    with sdk_client(emulator) as giga:
        yield giga


def test_chat_returns_a_deterministic_completion(client: GigaChat, emulator: EmulatorProcess) -> None:
    first = client.chat(PROMPT)
    second = client.chat(PROMPT)
    other = client.chat({**PROMPT, "messages": [{"role": "user", "content": "Something else"}]})
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].finish_reason == "stop"
    assert first.model == "GigaChat:2.0.28.2"
    usage = first.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    oauth_calls = [c for c in emulator.calls()["calls"] if c["endpoint"] == "/api/v2/oauth"]
    assert len(oauth_calls) == 1  # the SDK cached its token for all three calls


def test_stream_yields_the_same_text_as_a_plain_call(client: GigaChat) -> None:
    plain = client.chat(PROMPT).choices[0].message.content
    chunks = list(client.stream(PROMPT))
    assert len(chunks) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(chunk.choices[0].delta.content for chunk in chunks) == plain
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_max_tokens_gives_finish_reason_length(client: GigaChat) -> None:
    answer = client.chat({**PROMPT, "max_tokens": 3})
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


def test_wrong_key_raises_authentication_error(emulator: EmulatorProcess) -> None:
    with (
        sdk_client(emulator, credentials="d3Jvbmc6a2V5") as giga,
        pytest.raises(AuthenticationError) as caught,
    ):
        giga.chat(PROMPT)
    assert caught.value.status_code == 401
    assert caught.value.content == b'{"code":6,"message":"credentials doesn\'t match db data"}'


def test_token_expiring_mid_run_is_refreshed(
    emulator_factory: Callable[..., EmulatorProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the SDK's default 60 s refresh buffer a 2 s token is always "about to expire"; a zero buffer makes
    # the SDK keep the token until it really expires, so the run crosses an expiry.
    monkeypatch.setenv("GIGACHAT_TOKEN_EXPIRY_BUFFER_MS", "0")
    emulator = emulator_factory("--token-ttl", "2")
    with sdk_client(emulator) as giga:
        assert giga.chat(PROMPT).choices
        first_token = giga.get_token()
        assert first_token is not None
        wait_until(lambda: time.time() * 1000 > first_token.expires_at, timeout=30, what="token expiry")
        assert giga.chat(PROMPT).choices
        assert giga.token != first_token.access_token
    oauth_calls = [c for c in emulator.calls()["calls"] if c["endpoint"] == "/api/v2/oauth"]
    assert len(oauth_calls) == 2


def test_revoked_token_gets_401_and_the_sdk_retries_once(client: GigaChat, emulator: EmulatorProcess) -> None:
    assert client.chat(PROMPT).choices
    emulator.control("POST", "reset")  # forgets every token, like a server-side revocation
    assert client.chat(PROMPT).choices
    statuses = [(c["endpoint"], c["status"]) for c in emulator.calls()["calls"]]
    assert statuses == [
        ("/api/v1/chat/completions", 401),
        ("/api/v2/oauth", 200),
        ("/api/v1/chat/completions", 200),
    ]


def test_concurrency_limit_answers_429(client: GigaChat, emulator: EmulatorProcess) -> None:
    emulator.configure(max_concurrency=1, latency=1.5)
    client.get_token()
    outcome: list[object] = []
    slow = threading.Thread(target=lambda: outcome.append(client.chat(PROMPT)))
    slow.start()
    wait_until(
        lambda: emulator.control("GET", "stats")["in_flight"] == 1, timeout=30, what="a call in flight"
    )
    with pytest.raises(RateLimitError) as caught:
        client.chat(PROMPT)
    assert caught.value.content == b'{"status":429,"message":"Too many requests"}'
    assert caught.value.headers is not None and "retry-after" not in caught.value.headers
    slow.join(timeout=30)
    assert len(outcome) == 1 and not isinstance(outcome[0], Exception)


def test_injected_429_raises_rate_limit_error_with_retry_after(
    client: GigaChat, emulator: EmulatorProcess
) -> None:
    emulator.configure(error_rate=1.0, error_codes=[429], retry_after=7)
    with pytest.raises(RateLimitError) as caught:
        client.chat(PROMPT)
    assert caught.value.retry_after == 7.0
    chat_calls = [c for c in emulator.calls()["calls"] if c["endpoint"] == "/api/v1/chat/completions"]
    assert [(c["status"], c["injected"]) for c in chat_calls] == [(429, "error")]


def test_request_id_from_the_sdk_context_is_logged(client: GigaChat, emulator: EmulatorProcess) -> None:
    reset = request_id_cvar.set("task-42")
    try:
        client.chat(PROMPT)
        client.chat(PROMPT)
    finally:
        request_id_cvar.reset(reset)
    assert emulator.calls()["per_request_id"] == {"task-42": 2}


def test_files_upload_list_get_delete(client: GigaChat) -> None:
    uploaded = client.upload_file(("notes.txt", b"Quarterly revenue grew by ten percent", "text/plain"))
    assert uploaded.filename == "notes.txt"
    assert uploaded.bytes_ == 37
    assert uploaded.purpose == "general"
    assert [f.id_ for f in client.get_files().data] == [uploaded.id_]
    assert client.get_file(uploaded.id_).filename == "notes.txt"
    assert client.delete_file(uploaded.id_).deleted is True
    assert client.get_files().data == []
    with pytest.raises(NotFoundError):
        client.get_file(uploaded.id_)


def test_attachment_counts_into_the_prompt(client: GigaChat) -> None:
    plain = client.chat(PROMPT)
    uploaded = client.upload_file(("notes.txt", ("word " * 100).encode(), "text/plain"))
    message = {**PROMPT["messages"][0], "attachments": [uploaded.id_]}  # type: ignore[index]
    attached = client.chat({**PROMPT, "messages": [message]})
    assert attached.usage.prompt_tokens == plain.usage.prompt_tokens + 100
    assert attached.choices[0].message.content != plain.choices[0].message.content
    with pytest.raises(NotFoundError):
        client.chat({**PROMPT, "messages": [{**message, "attachments": ["no-such-file"]}]})


def test_tokens_count_and_models(client: GigaChat) -> None:
    counts = client.tokens_count(["Hello, world!", "Привет"], model="GigaChat")
    assert [(c.tokens, c.characters) for c in counts] == [(4, 13), (1, 6)]
    ids = {m.id_ for m in client.get_models().data}
    assert {"GigaChat", "GigaChat-2-Max", "Embeddings"} <= ids
    assert client.get_model("GigaChat-2-Pro").owned_by == "salutedevices"
    with pytest.raises(NotFoundError):
        client.get_model("GigaChat-Ultra-9000")


def test_balance(client: GigaChat) -> None:
    balance = client.get_balance()
    assert {entry.usage for entry in balance.balance} >= {"GigaChat"}
