"""Pure-logic tests of the emulator's modules: no sockets, no processes, a fake clock."""

from __future__ import annotations

import os
import threading

import httpx
import pytest

from gigachat_emulator.auth import TokenStore, check_oauth_request
from gigachat_emulator.calls import CHAT_ENDPOINT, CallLog, CallRecord, summarize
from gigachat_emulator.chat import (
    complete,
    content_pieces,
    parse_chat_request,
    stream_events,
)
from gigachat_emulator.config import FaultConfig
from gigachat_emulator.errors import ApiError, ConfigError, OAuthError
from gigachat_emulator.faults import ConcurrencyLimiter, FaultInjector, FaultKind, Sleeper
from gigachat_emulator.files import parse_multipart
from gigachat_emulator.tokenizer import count_tokens, truncate_to_tokens


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


def chat_body(text: str, **extra: object) -> dict[str, object]:
    return {"model": "GigaChat", "messages": [{"role": "user", "content": text}], **extra}


# --- tokenizer ---


def test_token_count_matches_the_recorded_example() -> None:
    assert count_tokens("Hello, world!") == 4


def test_long_words_cost_more_and_cyrillic_counts() -> None:
    assert count_tokens("internationalization") == 4
    assert count_tokens("Привет, мир") == 3
    assert count_tokens("") == 0


def test_truncate_keeps_whole_pieces_within_the_limit() -> None:
    text = "one two three four"
    assert truncate_to_tokens(text, 2) == "one two"
    assert count_tokens(truncate_to_tokens(text, 3)) == 3
    assert truncate_to_tokens(text, 100) == text


# --- chat validation and determinism ---


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, 422, "Invalid params: model is required"),
        (chat_body("x") | {"model": "GigaChat-17"}, 404, "No such model"),
        (chat_body("x") | {"model": "Embeddings"}, 404, "No such model"),
        ({"model": "GigaChat", "messages": []}, 422, "Invalid params: messages must be a non-empty list"),
        (
            chat_body("x", repetition_penalty=0),
            422,
            "Invalid params: repetition_penalty must be in range (0, +inf)",
        ),
        (chat_body("x", temperature="hot"), 422, "Invalid params: temperature must be a number"),
        (chat_body("x", top_p=1.5), 422, "Invalid params: top_p must be in range [0, 1]"),
        (chat_body("x", max_tokens=0), 422, "Invalid params: max_tokens must be a positive integer"),
        (chat_body("x", max_tokens=2.5), 422, "Invalid params: max_tokens must be a positive integer"),
        (chat_body("x", stream="yes"), 422, "Invalid params: stream must be a boolean"),
        ([1, 2], 400, "Invalid JSON body: expected an object"),
    ],
)
def test_invalid_chat_requests_are_rejected(body: object, status: int, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body)
    assert (caught.value.status, caught.value.message) == (status, message)


def test_system_message_must_come_first() -> None:
    body = {
        "model": "GigaChat",
        "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}],
    }
    with pytest.raises(ApiError, match="system message must be the first message"):
        parse_chat_request(body)
    body["messages"] = [{"role": "bot", "content": "hi"}]
    with pytest.raises(ApiError, match=r"messages\[0\]\.role"):
        parse_chat_request(body)


def test_answers_are_deterministic_and_depend_on_the_input() -> None:
    first = complete(parse_chat_request(chat_body("Summarise the quarterly report")))
    again = complete(parse_chat_request(chat_body("Summarise the quarterly report")))
    other = complete(parse_chat_request(chat_body("Translate the letter")))
    assert first == again
    assert first.content != other.content
    assert "Summarise the quarterly report" in first.content
    assert first.finish_reason == "stop"
    assert first.completion_tokens == count_tokens(first.content)


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    full = complete(parse_chat_request(chat_body("Summarise")))
    cut = complete(parse_chat_request(chat_body("Summarise", max_tokens=5)))
    assert cut.finish_reason == "length"
    assert cut.completion_tokens == 5
    assert full.content.startswith(cut.content)


def test_stream_events_follow_the_recorded_layout() -> None:
    request = parse_chat_request(chat_body("Count from 1 to 3"))
    completion = complete(request)
    events = [data for _, data in stream_events(request, completion, 1771250907)]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    assert events[-1] == b"data: [DONE]\n\n"
    assert b'"role":"assistant"' in events[0]
    assert all(b'"role"' not in e for e in events[1:])
    assert b'"finish_reason":"stop"' in events[-2] and b'"usage"' in events[-2]
    assert b'"delta":{"content":""}' in events[-2]
    assert "".join(content_pieces(completion.content)) == completion.content


def test_stream_delays_are_per_token() -> None:
    request = parse_chat_request(chat_body("Count from 1 to 3"))
    completion = complete(request)
    delays = [delay for delay, _ in stream_events(request, completion, 0, per_token_s=0.5)]
    assert sum(delays) == pytest.approx(0.5 * completion.completion_tokens)


# --- config ---


def test_config_partial_update_is_validated_all_or_nothing() -> None:
    config = FaultConfig()
    updated = config.updated({"latency": "0.5", "error_codes": "429, 503", "retry_after": 2})
    assert (updated.latency, updated.error_codes, updated.retry_after) == (0.5, (429, 503), 2.0)
    assert updated.hang_rate == config.hang_rate
    for bad in (
        {"latency": -1},
        {"error_rate": 2},
        {"error_codes": [200]},
        {"nope": 1},
        {"max_concurrency": 1.5},
    ):
        with pytest.raises(ConfigError):
            config.updated(bad)
    with pytest.raises(ConfigError, match="latency"):
        config.updated({"error_rate": 0.5, "latency": "slow"})


# --- auth ---


def test_token_store_expires_tokens_by_the_clock() -> None:
    clock = FakeClock()
    store = TokenStore(clock=clock)
    token, grant = store.issue(account="a", scope="GIGACHAT_API_PERS", ttl_s=2)
    assert grant.expires_at_ms == int(clock.value * 1000) + 2000
    assert len(token.split(".")) == 5
    assert store.check(f"Bearer {token}").account == "a"
    clock.value += 2.0
    with pytest.raises(ApiError, match="Token has expired"):
        store.check(f"Bearer {token}")
    with pytest.raises(ApiError, match="Unauthorized"):
        store.check("Bearer not-a-token")
    with pytest.raises(ApiError, match="Unauthorized"):
        store.check(None)


def test_oauth_checks_in_documented_order() -> None:
    good = {"authorization": "Basic KEY", "rquid": "6f0b1291-c7f3-43c6-bb2e-9f3efb2dc98e"}

    def code(headers: dict[str, str], body: bytes) -> int:
        with pytest.raises(OAuthError) as caught:
            check_oauth_request(headers, body, auth_key="KEY", key_scope="GIGACHAT_API_PERS")
        return caught.value.code

    assert code(good | {"rquid": "short"}, b"scope=GIGACHAT_API_PERS") == 3
    assert code(good, b"") == 5
    assert code(good, b"scope=WHATEVER") == 1
    assert code(good | {"authorization": "Basic OTHER"}, b"scope=GIGACHAT_API_PERS") == 6
    assert code(good, b"scope=GIGACHAT_API_CORP") == 7
    assert check_oauth_request(
        good, b"scope=GIGACHAT_API_PERS", auth_key="KEY", key_scope="GIGACHAT_API_PERS"
    )


# --- files ---


@pytest.mark.parametrize("size", [0, 1, 4096, 70_001])
def test_multipart_round_trips_binary_content(size: int) -> None:
    data = os.urandom(size) + b"\r\n--\r\n\n\r"
    request = httpx.Request(
        "POST", "http://x/", files={"file": ("blob.bin", data, "image/png")}, data={"purpose": "general"}
    )
    parts = {p.name: p for p in parse_multipart(request.headers["content-type"], request.read())}
    assert parts["file"].data == data
    assert (parts["file"].filename, parts["file"].content_type) == ("blob.bin", "image/png")
    assert parts["purpose"].data == b"general"


def test_multipart_rejects_non_multipart() -> None:
    with pytest.raises(ValueError, match="multipart"):
        parse_multipart("application/json", b"{}")


# --- faults, limiter, call log ---


def test_fault_injector_is_reproducible_and_rotates_codes() -> None:
    config = FaultConfig(error_rate=1.0, error_codes=(500, 429, 503))
    injector = FaultInjector(seed=7)
    codes = [injector.decide(config) for _ in range(4)]
    assert [f.status for f in codes if f] == [500, 429, 503, 500]
    half = FaultConfig(error_rate=0.5)
    injector.reset()
    first = [injector.decide(half) is not None for _ in range(200)]
    injector.reset()
    replay = [injector.decide(half) is not None for _ in range(200)]
    assert replay == first  # the reset restarts the PRNG from the seed
    assert 60 < sum(first) < 140
    hang = FaultInjector(seed=1).decide(FaultConfig(hang_rate=1.0))
    assert hang is not None and hang.kind is FaultKind.HANG


def test_concurrency_limiter_counts_per_account() -> None:
    limiter = ConcurrencyLimiter()
    assert limiter.try_acquire("a", 1)
    assert not limiter.try_acquire("a", 1)
    assert limiter.try_acquire("b", 1)
    limiter.release("a")
    assert limiter.try_acquire("a", 1)
    assert all(limiter.try_acquire("c", 0) for _ in range(50))


def test_sleeper_wakes_on_shutdown() -> None:
    stopping = threading.Event()
    sleeper = Sleeper(stopping)
    assert sleeper.sleep(0.001)
    stopping.set()
    assert not sleeper.sleep(30)
    assert sleeper.hang(30, lambda: False) == "stopping"
    assert Sleeper(threading.Event()).hang(30, lambda: True) == "gone"


def record(request_id: str | None, status: int, endpoint: str = CHAT_ENDPOINT) -> CallRecord:
    return CallRecord(0.0, "POST", endpoint, status, request_id, None, "GigaChat", 1, 1, None, 1.0)


def test_call_log_is_bounded_and_summarises_chat_calls_per_request_id() -> None:
    log = CallLog(capacity=3)
    for item in [record("a", 500), record("a", 200), record("b", 200), record("a", 200, "/api/v2/oauth")]:
        log.add(item)
    assert log.dropped == 1
    assert len(log.query()) == 3
    assert summarize(log.query()) == {
        "per_request_id": {"a": 1, "b": 1},
        "per_request_id_ok": {"a": 1, "b": 1},
    }
    assert [r.status for r in log.query(request_id="a")] == [200, 200]
    log.clear()
    assert log.query() == [] and log.dropped == 0
