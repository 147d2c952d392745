"""GigaChatClient against a scripted HTTP layer: retries, timing, 401 handling, errors, request shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from llm_service.errors import (
    BreakerOpenError,
    PaymentRequiredError,
    PermanentTaskError,
    ProbeFailedError,
    TransientTaskError,
)
from llm_worker.gigachat import BreakerSet, ChatResult, ConcurrencyLimiter, GigaChatClient
from llm_worker.gigachat.budget import CallBudget
from llm_worker.gigachat.limiter import read_cap
from tests.gigachat_client.fakes import (
    API_URL,
    AUTH_KEY,
    AUTH_URL,
    FakeClock,
    FakeSession,
    Script,
    chat_body,
    make_settings,
    response,
    token_response,
    wall_zero,
)

MESSAGES = [{"role": "user", "content": "Кратко перескажи документ"}]


class Rig:
    """A client wired to a FakeSession, a FakeClock, a real limiter (in tmp_path) and a breaker."""

    def __init__(self, tmp_path: Path, script: Script, **settings: Any) -> None:
        self.clock = FakeClock()
        self.settings = make_settings(tmp_path, **settings)
        self.session = FakeSession(script)
        self.limiter = ConcurrencyLimiter.from_settings(self.settings)
        self.breakers = BreakerSet(
            fail_max=self.settings.gigachat_breaker_fail_max, reset_timeout_s=15, clock=self.clock
        )
        self.breaker = self.breakers.get("GigaChat")
        self.client = GigaChatClient(
            settings=self.settings,
            limiter=self.limiter,
            breakers=self.breakers,
            session_factory=lambda: self.session,
            clock=self.clock,
            sleep=self.clock.sleep,
            rng=lambda: 1.0,
            wall_clock=wall_zero,
        )

    def chat(
        self, *, deadline_s: float = 120.0, task_id: str = "task-1", budget: CallBudget | None = None
    ) -> ChatResult:
        return self.client.chat(
            task_id=task_id,
            messages=MESSAGES,
            model="GigaChat",
            params={"temperature": 0.2},
            deadline=self.clock() + deadline_s,
            budget=budget,
        )

    def api_calls(self) -> int:
        return len(self.session.to(API_URL))


def test_chat_sends_utf8_json_with_task_headers_and_parses_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    rig = Rig(tmp_path, Script())

    result = rig.chat(task_id="a-1")

    assert result.content == "Привет"
    assert (result.finish_reason, result.model, result.total_tokens) == ("stop", "GigaChat:2.0.28.2", 12)
    sent = rig.session.to(API_URL)[0]
    assert sent.url == f"{API_URL}/chat/completions"
    assert sent.headers["Authorization"] == "Bearer tok-1"
    assert sent.headers["X-Request-ID"] == sent.headers["X-Session-ID"] == "a-1"
    assert "Кратко".encode() in sent.kwargs["data"]  # raw UTF-8, not \u escapes
    body = json.loads(sent.kwargs["data"])
    assert body == {"temperature": 0.2, "model": "GigaChat", "messages": MESSAGES, "stream": False}
    assert sent.kwargs["verify"] is True


def test_ca_bundle_wins_over_verify_flag_and_pool_fits_all_task_threads(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path, Script(), gigachat_ca_bundle="/etc/ssl/russian-trusted.pem", worker_max_concurrent_tasks=20
    )
    rig.chat()

    assert {s.kwargs["verify"] for s in rig.session.sent} == {"/etc/ssl/russian-trusted.pem"}
    adapter = rig.session.get_adapter("https://api.test/")
    assert adapter._pool_maxsize >= 20  # type: ignore[attr-defined]


def test_requests_ca_bundle_variable_still_names_the_ca_when_none_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session reads no environment per request (client.make_session); the variable requests
    itself honours is read once instead, and GIGACHAT_CA_BUNDLE or GIGACHAT_VERIFY_SSL=false still win."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/from-env.pem")
    rig = Rig(tmp_path, Script())
    rig.chat()
    assert rig.session.trust_env is False
    assert {s.kwargs["verify"] for s in rig.session.sent} == {"/etc/ssl/from-env.pem"}

    off = Rig(tmp_path, Script(), gigachat_verify_ssl=False)
    off.chat()
    assert {s.kwargs["verify"] for s in off.session.sent} == {False}


def test_lenient_parsing_of_extra_and_missing_fields(tmp_path: Path) -> None:
    body = {
        "choices": [{"message": {"content": "ok", "reasoning_content": "…"}}],
        "object": "chat.completions",
    }
    rig = Rig(tmp_path, Script(api=[response(200, body)]))

    result = rig.chat()

    assert (result.content, result.finish_reason, result.model, result.total_tokens) == (
        "ok",
        "stop",
        "GigaChat",
        0,
    )


def test_401_refreshes_the_token_and_retries_once(tmp_path: Path) -> None:
    script = Script(
        oauth=[token_response("old"), token_response("new")],
        api=[response(401, {"status": 401, "message": "Token has expired"}), response(200, chat_body())],
    )
    rig = Rig(tmp_path, script)

    assert rig.chat().content == "Привет"
    assert [s.headers["Authorization"] for s in rig.session.to(API_URL)] == ["Bearer old", "Bearer new"]
    assert rig.clock.sleeps == []  # no backoff for a 401


def test_a_second_401_is_auth_failed(tmp_path: Path) -> None:
    script = Script(
        oauth=[token_response("old"), token_response("new")], api=[response(401, {"status": 401})]
    )
    rig = Rig(tmp_path, script)

    with pytest.raises(PermanentTaskError) as caught:
        rig.chat()
    assert caught.value.code == "AUTH_FAILED"
    assert rig.api_calls() == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "MODEL_BAD_REQUEST"),
        (422, "MODEL_INVALID_PARAMS"),
        (404, "MODEL_NOT_FOUND"),
        (413, "INPUT_TOO_LONG"),
        (418, "MODEL_REJECTED"),
    ],
)
def test_4xx_are_permanent_and_not_retried(tmp_path: Path, status: int, code: str) -> None:
    rig = Rig(tmp_path, Script(api=[response(status, {"status": status, "message": "No such model"})]))

    with pytest.raises(PermanentTaskError) as caught:
        rig.chat()

    assert caught.value.code == code
    assert f"HTTP {status} No such model" in str(caught.value)
    assert rig.api_calls() == 1
    assert rig.breaker.failure_count == 0  # a task error is no sign of a sick server


@pytest.mark.parametrize(("status", "code"), [(402, "MODEL_PAYMENT_REQUIRED"), (403, "MODEL_FORBIDDEN")])
def test_402_and_403_are_the_accounts_fault_not_the_tasks(tmp_path: Path, status: int, code: str) -> None:
    rig = Rig(tmp_path, Script(api=[response(status, {"status": status, "message": "Payment Required"})]))

    with pytest.raises(PaymentRequiredError) as caught:
        rig.chat()

    assert not isinstance(caught.value, PermanentTaskError)  # the pipeline must not fail the task
    assert (caught.value.code, caught.value.status) == (code, status)
    assert rig.api_calls() == 1  # not retried: the pool pauses and probes instead
    assert rig.breaker.failure_count == 0


def test_5xx_429_and_timeouts_are_retried_with_exponential_backoff(tmp_path: Path) -> None:
    script = Script(
        api=[
            response(500, {"status": 500, "message": "Internal Server Error"}),
            requests.ReadTimeout("read timed out"),
            response(429, {"status": 429, "message": "Too many requests"}),
            response(200, chat_body()),
        ]
    )
    rig = Rig(tmp_path, script)

    assert rig.chat().content == "Привет"
    assert rig.clock.sleeps == [0.5, 1.0, 2.0]  # rng = 1: the full-jitter upper bound, doubling


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    script = Script(api=[response(429, {}, {"Retry-After": "7"}), response(200, chat_body())])
    rig = Rig(tmp_path, script)

    rig.chat()

    assert rig.clock.sleeps == [7.0]


def test_exhausted_retries_raise_transient_with_the_last_code(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script(api=[response(429, {"status": 429, "message": "Too many requests"})]))

    with pytest.raises(TransientTaskError) as caught:
        rig.chat()

    assert caught.value.code == "MODEL_RATE_LIMITED"
    assert "after 4 attempts" in str(caught.value)
    assert rig.api_calls() == 4


def test_a_call_budget_shared_by_two_calls_stops_the_http_retries(tmp_path: Path) -> None:
    script = Script(api=[response(503, {"status": 503, "message": "busy"})])
    rig = Rig(tmp_path, script, gigachat_breaker_fail_max=100)
    budget = CallBudget(limit=6)

    with pytest.raises(TransientTaskError):
        rig.chat(budget=budget)  # 4 HTTP attempts
    with pytest.raises(TransientTaskError) as caught:
        rig.chat(budget=budget)  # only 2 left

    assert rig.api_calls() == 6 and budget.spent
    assert "TASK_MAX_MODEL_CALLS=6 model calls spent" in str(caught.value)
    assert caught.value.code == "MODEL_UNAVAILABLE"


def test_never_sleeps_past_the_deadline(tmp_path: Path) -> None:
    script = Script(api=[response(503, "<html>bad gateway</html>")])
    rig = Rig(tmp_path, script, gigachat_call_attempts=100)
    start = rig.clock()

    with pytest.raises(TransientTaskError) as caught:
        rig.chat(deadline_s=5.0)

    assert caught.value.code == "MODEL_UNAVAILABLE"
    assert "deadline" in str(caught.value)
    assert rig.clock() < start + 5.0
    assert rig.clock.sleeps == [0.5, 1.0, 2.0]  # the next pause (4 s) would end past the deadline


def test_per_call_timeout_is_capped_by_the_remaining_time(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script(), gigachat_timeout_s=30.0)

    rig.chat(deadline_s=3.0)
    rig.chat(deadline_s=300.0)

    timeouts = [s.kwargs["timeout"] for s in rig.session.to(API_URL)]
    assert timeouts == [pytest.approx(3.0), 30.0]


def test_no_call_when_the_deadline_has_passed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script())
    rig.client.tokens.get(deadline=rig.clock() + 10)

    with pytest.raises(TransientTaskError) as caught:
        rig.chat(deadline_s=0.0)

    assert caught.value.code == "MODEL_TIMEOUT"
    assert rig.api_calls() == 0


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    token = "eyJ.secret.token.value.x"
    echo = {"status": 400, "message": f"bad header Bearer {token} / Basic {AUTH_KEY}"}
    rig = Rig(tmp_path, Script(oauth=[token_response(token)], api=[response(400, echo)]))

    with pytest.raises(PermanentTaskError) as caught:
        rig.chat()

    text = f"{caught.value} {caught.value!r} {caught.value.__cause__!r} {caught.value.__context__!r}"
    assert token not in text and AUTH_KEY not in text


def test_breaker_opens_on_5xx_and_then_fails_fast_without_http(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script(api=[response(502, "bad gateway")]), gigachat_breaker_fail_max=3)

    with pytest.raises(TransientTaskError) as first:
        rig.chat()  # attempts 1-3 open the breaker; the 4th is refused
    # This task did reach the server: its failure counts, unlike a plain breaker refusal.
    assert not isinstance(first.value, BreakerOpenError)
    assert first.value.code == "MODEL_UNAVAILABLE" and "circuit breaker opened" in str(first.value)
    sent = rig.api_calls()
    with pytest.raises(BreakerOpenError) as caught:
        rig.chat()

    assert sent == 3
    assert rig.api_calls() == 3
    assert caught.value.code == "BREAKER_OPEN" and caught.value.transient


def test_a_failed_probe_is_reported_as_counting_and_not_retried(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script(api=[response(502, "bad gateway")]), gigachat_breaker_fail_max=1)
    with pytest.raises(TransientTaskError):
        rig.chat()  # the first 502 opens the breaker
    sent = rig.api_calls()
    rig.clock.advance(16)  # past the reset timeout: the next call is the half-open probe
    with pytest.raises(ProbeFailedError) as caught:
        rig.chat()
    assert rig.api_calls() == sent + 1  # the probe only: no retry into an open breaker
    assert caught.value.code == "MODEL_UNAVAILABLE" and "probe" in str(caught.value)
    assert not isinstance(caught.value, BreakerOpenError)


def test_limiter_learns_from_429_and_success(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script(api=[response(429, {}), response(200, chat_body())]))

    rig.chat()

    record = read_cap(rig.limiter.directory)
    # Refused with one call in flight: the account allows fewer than one more; the cap stays at 1.
    assert record is not None and (record.cap, record.ceiling) == (1, 1)
    assert rig.limiter._held == set()  # the permit was released


def test_upload_and_delete_file(tmp_path: Path) -> None:
    script = Script(
        api=[response(200, {"id": "f-1", "object": "file", "bytes": 3}), response(200, {"deleted": True})]
    )
    rig = Rig(tmp_path, script)

    file_id = rig.client.upload_file(
        task_id="t", filename="a.pdf", data=b"%PDF", content_type="application/pdf", deadline=rig.clock() + 60
    )
    rig.client.delete_file(task_id="t", file_id=file_id)

    upload, delete = rig.session.to(API_URL)
    assert file_id == "f-1"
    assert upload.url == f"{API_URL}/files"
    assert upload.kwargs["files"] == {"file": ("a.pdf", b"%PDF", "application/pdf")}
    assert upload.kwargs["data"] == {"purpose": "general"}
    assert (delete.method, delete.url) == ("POST", f"{API_URL}/files/f-1/delete")


def test_deleting_a_missing_file_is_fine(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script(api=[response(404, {"status": 404, "message": "File not found"})]))

    rig.client.delete_file(task_id="t", file_id="gone")


def test_check_fetches_a_token_and_lists_models(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Script(api=[response(200, {"object": "list", "data": []})]))

    rig.client.check()

    assert [s.url for s in rig.session.sent] == [AUTH_URL, f"{API_URL}/models"]


def test_check_raises_auth_failed_on_a_bad_key(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path, Script(oauth=[response(401, {"code": 6, "message": "credentials doesn't match db data"})])
    )

    with pytest.raises(PermanentTaskError) as caught:
        rig.client.check()
    assert caught.value.code == "AUTH_FAILED"


def _chat_on(rig: Rig, model: str, *, fallback: bool = True) -> ChatResult:
    return rig.client.chat(
        task_id="t", messages=MESSAGES, model=model, params={}, deadline=rig.clock() + 120, fallback=fallback
    )


def _models_sent(rig: Rig) -> list[str]:
    return [
        json.loads(s.kwargs["data"])["model"] for s in rig.session.sent if s.url.endswith("/chat/completions")
    ]


def test_a_model_failing_past_its_retries_falls_back_to_the_next_of_its_chain(tmp_path: Path) -> None:
    answer = {**chat_body(), "model": "GigaChat-2-Pro:2.0.28.2"}
    script = Script(api=[response(503, "down"), response(503, "down"), response(200, answer)])
    rig = Rig(
        tmp_path,
        script,
        gigachat_call_attempts=2,
        gigachat_fallback_models="GigaChat-2-Max=GigaChat-2-Pro,GigaChat-2",
    )

    result = _chat_on(rig, "GigaChat-2-Max")

    assert result.model == "GigaChat-2-Pro:2.0.28.2"
    assert _models_sent(rig) == ["GigaChat-2-Max", "GigaChat-2-Max", "GigaChat-2-Pro"]
    assert rig.breakers.get("GigaChat-2-Pro").failure_count == 0  # breakers are per model
    assert rig.breakers.get("GigaChat-2-Max").failure_count == 2


def test_fallback_false_and_permanent_errors_stay_on_the_model(tmp_path: Path) -> None:
    script = Script(api=[response(429, {}), response(429, {}), response(200, chat_body())])
    rig = Rig(
        tmp_path, script, gigachat_call_attempts=2, gigachat_fallback_models="GigaChat-2-Max=GigaChat-2"
    )
    with pytest.raises(TransientTaskError) as caught:
        _chat_on(rig, "GigaChat-2-Max", fallback=False)
    assert caught.value.code == "MODEL_RATE_LIMITED"
    assert _models_sent(rig) == ["GigaChat-2-Max", "GigaChat-2-Max"]

    rig = Rig(
        tmp_path / "b",
        Script(api=[response(422, {"message": "Invalid params: x"})]),
        gigachat_fallback_models="GigaChat-2-Max=GigaChat-2",
    )
    with pytest.raises(PermanentTaskError) as permanent:
        _chat_on(rig, "GigaChat-2-Max")
    assert permanent.value.code == "MODEL_INVALID_PARAMS" and "Invalid params: x" in str(permanent.value)
    assert _models_sent(rig) == ["GigaChat-2-Max"]


def test_when_the_whole_chain_fails_the_first_models_failure_is_raised(tmp_path: Path) -> None:
    script = Script(api=[response(503, "down"), response(429, {})])
    rig = Rig(tmp_path, script, gigachat_call_attempts=1, gigachat_fallback_models="A-Model=B-Model")
    with pytest.raises(TransientTaskError) as caught:
        _chat_on(rig, "A-Model")
    assert caught.value.code == "MODEL_UNAVAILABLE" and not isinstance(caught.value, BreakerOpenError)
    assert _models_sent(rig) == ["A-Model", "B-Model"]


DEEP = b"[" * 200_000 + b"]" * 200_000  # json raises RecursionError on it, not ValueError


@pytest.mark.parametrize("status", [200, 500])
def test_a_body_nested_past_the_parsers_limit_is_a_bad_answer_not_an_exception(
    tmp_path: Path, status: int
) -> None:
    rig = Rig(tmp_path, Script(api=[response(status, DEEP)]), gigachat_call_attempts=1)

    with pytest.raises(TransientTaskError) as failure:
        rig.chat()

    assert failure.value.code in ("MODEL_BAD_RESPONSE", "MODEL_UNAVAILABLE")
