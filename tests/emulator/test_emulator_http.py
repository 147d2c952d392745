"""Exact wire behaviour checked with raw ``requests``: error bodies, SSE bytes, control API, faults."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable

import pytest
import requests

from tests.waiting import wait_until

from .conftest import EmulatorProcess

BODY = {"model": "GigaChat", "messages": [{"role": "user", "content": "Count from 1 to 3"}]}


def bearer(emulator: EmulatorProcess, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.token()}", **headers}


def chat(
    emulator: EmulatorProcess, headers: dict[str, str], body: object = None, **kwargs: object
) -> requests.Response:
    url = f"{emulator.api_url}/chat/completions"
    return emulator.session.post(
        url, headers=headers, json=BODY if body is None else body, timeout=30, **kwargs
    )


# --- OAuth ---


def test_oauth_success_shape(emulator: EmulatorProcess) -> None:
    before_ms = time.time() * 1000
    response = emulator.oauth()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"access_token", "expires_at"}
    assert len(body["access_token"].split(".")) == 5 and len(body["access_token"]) > 1000
    assert before_ms + 1_700_000 < body["expires_at"] < before_ms + 1_900_000  # ms, ~30 min ahead


@pytest.mark.parametrize(
    ("kwargs", "status", "body"),
    [
        ({"key": "bad-key"}, 401, {"code": 6, "message": "credentials doesn't match db data"}),
        ({"scope": ""}, 400, {"code": 5, "message": "scope is empty"}),
        ({"scope": "GIGACHAT_API_NOPE"}, 400, {"code": 1, "message": "scope data format invalid"}),
        (
            {"scope": "GIGACHAT_API_CORP"},
            400,
            {"code": 7, "message": "scope from db not fully includes consumed scope"},
        ),
        ({"RqUID": "not-a-uuid"}, 400, {"code": 3, "message": "RqUID is invalid"}),
    ],
)
def test_oauth_errors_use_the_code_shape(
    emulator: EmulatorProcess, kwargs: dict[str, str], status: int, body: dict[str, object]
) -> None:
    response = emulator.oauth(**kwargs)
    assert (response.status_code, response.json()) == (status, body)


def test_oauth_without_rquid_is_400(emulator: EmulatorProcess) -> None:
    response = emulator.session.post(
        emulator.auth_url,
        headers={"Authorization": f"Basic {emulator.auth_key}"},
        data={"scope": "GIGACHAT_API_PERS"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == 3


def test_corp_scope_key_gets_403_on_balance(emulator_factory: Callable[..., EmulatorProcess]) -> None:
    corp = emulator_factory("--scope", "GIGACHAT_API_CORP", auth_key="Y29ycDprZXk=")
    assert corp.oauth(scope="GIGACHAT_API_PERS").json()["code"] == 7
    token = corp.oauth(scope="GIGACHAT_API_CORP").json()["access_token"]
    response = corp.session.get(f"{corp.api_url}/balance", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()) == (403, {"status": 403, "message": "Permission denied"})


# --- API errors ---


def test_api_errors_use_the_status_shape(emulator: EmulatorProcess) -> None:
    missing = chat(emulator, {})
    assert (missing.status_code, missing.json()) == (401, {"status": 401, "message": "Unauthorized"})
    assert missing.headers["Content-Type"] == "application/json; charset=utf-8"
    unknown = chat(emulator, {"Authorization": "Bearer nope"})
    assert unknown.json() == {"status": 401, "message": "Unauthorized"}
    no_model = chat(emulator, bearer(emulator), {**BODY, "model": "GigaChat-99"})
    assert (no_model.status_code, no_model.json()) == (404, {"status": 404, "message": "No such model"})


def test_expired_token_says_so(emulator: EmulatorProcess) -> None:
    emulator.configure(token_ttl=0.2)
    headers = bearer(emulator)
    emulator.configure(token_ttl=1800)

    def expired() -> bool:
        return chat(emulator, headers).status_code == 401

    wait_until(expired, timeout=30, what="the 0.2 s token to expire", step=0.05)
    assert chat(emulator, headers).json() == {"status": 401, "message": "Token has expired"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repetition_penalty": -1}, "Invalid params: repetition_penalty must be in range (0, +inf)"),
        ({"temperature": "warm"}, "Invalid params: temperature must be a number"),
        ({"max_tokens": "many"}, "Invalid params: max_tokens must be a positive integer"),
        ({"top_p": 2}, "Invalid params: top_p must be in range [0, 1]"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            "Invalid params: system message must be the first message",
        ),
    ],
)
def test_validation_errors_are_422(
    emulator: EmulatorProcess, change: dict[str, object], message: str
) -> None:
    response = chat(emulator, bearer(emulator), {**BODY, **change})
    assert (response.status_code, response.json()) == (422, {"status": 422, "message": message})


def test_unknown_path_and_wrong_method(emulator: EmulatorProcess) -> None:
    assert emulator.session.get(f"{emulator.api_url}/nothing").status_code == 404
    wrong = emulator.session.delete(f"{emulator.api_url}/files")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, POST"


# --- chat wire format ---


def test_response_echoes_request_and_session_ids(emulator: EmulatorProcess) -> None:
    response = chat(emulator, bearer(emulator, **{"X-Request-ID": "r-1", "X-Session-ID": "s-1"}))
    assert (response.headers["X-Request-Id"], response.headers["X-Session-Id"]) == ("r-1", "s-1")
    generated = chat(emulator, bearer(emulator))
    assert uuid.UUID(generated.headers["X-Request-Id"])


def test_same_input_same_answer_different_input_different_answer(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    first, again = chat(emulator, headers).json(), chat(emulator, headers).json()
    other = chat(emulator, headers, {**BODY, "messages": [{"role": "user", "content": "Count to 4"}]}).json()
    assert first["choices"] == again["choices"]
    assert first["choices"][0]["message"]["content"] != other["choices"][0]["message"]["content"]
    assert list(first) == ["choices", "created", "model", "object", "usage"]
    assert first["object"] == "chat.completion"
    assert set(first["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "precached_prompt_tokens",
    }


def test_sse_byte_layout(emulator: EmulatorProcess) -> None:
    response = chat(emulator, bearer(emulator), {**BODY, "stream": True})
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Transfer-Encoding"] == "chunked"
    raw = response.content
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = raw.split(b"\n\n")[:-1]
    assert all(event.startswith(b"data: ") for event in events)
    decoded = [json.loads(event[len(b"data: ") :]) for event in events[:-1]]
    assert decoded[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in d["choices"][0]["delta"] for d in decoded[1:])
    assert all("usage" not in d and "finish_reason" not in d["choices"][0] for d in decoded[:-1])
    last = decoded[-1]
    assert last["choices"][0] == {"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}
    assert list(last) == ["choices", "created", "model", "object", "usage"]
    plain = chat(emulator, bearer(emulator)).json()
    assert (
        "".join(d["choices"][0]["delta"]["content"] for d in decoded)
        == plain["choices"][0]["message"]["content"]
    )
    assert last["usage"] == plain["usage"]


# --- control API and faults ---


def test_call_log_counts_chat_calls_per_request_id(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator, **{"X-Request-ID": "task-1", "X-Session-ID": "sess-9"})
    emulator.configure(error_rate=1.0, error_codes=[503])
    assert chat(emulator, headers).status_code == 503
    emulator.configure(error_rate=0.0)
    assert chat(emulator, headers).status_code == 200
    assert chat(emulator, bearer(emulator, **{"X-Request-ID": "task-2"})).status_code == 200
    log = emulator.calls()
    assert log["per_request_id"] == {"task-1": 2, "task-2": 1}
    assert log["per_request_id_ok"] == {"task-1": 1, "task-2": 1}
    only = emulator.calls(request_id="task-1")
    assert [(c["status"], c["injected"]) for c in only["calls"]] == [(503, "error"), (200, None)]
    first = only["calls"][1]
    assert first["session_id"] == "sess-9" and first["model"] == "GigaChat"
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert emulator.calls(session_id="sess-9")["count"] == 2


def test_runtime_config_change_adds_latency(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    assert emulator.configure(latency=0.6)["latency"] == 0.6
    started = time.monotonic()
    assert chat(emulator, headers).status_code == 200
    assert time.monotonic() - started >= 0.6
    emulator.configure(latency=0)
    started = time.monotonic()
    assert chat(emulator, headers).status_code == 200
    assert time.monotonic() - started < 0.5


def test_bad_config_is_rejected_and_nothing_changes(emulator: EmulatorProcess) -> None:
    before = emulator.control("GET", "config")
    response = emulator.session.post(
        f"{emulator.base_url}/_emulator/config", json={"latency": 2, "error_rate": 7}, timeout=10
    )
    assert response.status_code == 400
    assert "error_rate" in response.json()["message"]
    assert emulator.control("GET", "config") == before


def test_outage_window_answers_503_then_recovers(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    emulator.control("POST", "outage", json={"seconds": 30})
    down = chat(emulator, headers)
    assert (down.status_code, down.json()) == (503, {"status": 503, "message": "Service Unavailable"})
    assert emulator.oauth().status_code == 503
    assert emulator.control("GET", "health") == {"ok": True}
    emulator.control("POST", "outage", json={"seconds": 0})
    assert chat(emulator, headers).status_code == 200
    emulator.control("POST", "outage", json={"seconds": 0.3})
    wait_until(lambda: chat(emulator, headers).status_code == 200, timeout=30, what="the outage to end")
    injected = [c["injected"] for c in emulator.calls()["calls"]]
    assert injected.count("outage") >= 2


def test_outage_reset_mode_drops_connections(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    emulator.control("POST", "outage", json={"seconds": 30, "mode": "reset"})
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{emulator.api_url}/chat/completions", headers=headers, json=BODY, timeout=10)
    emulator.control("POST", "outage", json={"seconds": 0})
    assert chat(emulator, headers).status_code == 200


def test_hung_call_ends_when_the_client_gives_up(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator, **{"X-Request-ID": "hang-1"})
    emulator.configure(hang_rate=1.0)
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{emulator.api_url}/chat/completions", headers=headers, json=BODY, timeout=0.5)

    def logged() -> bool:
        return emulator.calls(request_id="hang-1")["count"] == 1

    wait_until(logged, timeout=30, what="the hung call to notice the disconnect")
    call = emulator.calls(request_id="hang-1")["calls"][0]
    assert call["injected"] == "hang" and call["status"] in (499, 504)
    assert call["duration_ms"] < 5000
    assert emulator.control("GET", "stats")["in_flight"] == 0


def test_error_codes_rotate(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    emulator.configure(error_rate=1.0, error_codes="500,429,503")
    statuses = [chat(emulator, headers).status_code for _ in range(4)]
    assert statuses == [500, 429, 503, 500]
    bodies = {chat(emulator, headers).json()["message"] for _ in range(3)}
    assert bodies == {"Internal Server Error", "Too many requests", "Service Unavailable"}


def test_oauth_faults_only_with_the_flag(emulator: EmulatorProcess) -> None:
    emulator.configure(error_rate=1.0, error_codes=[500])
    assert emulator.oauth().status_code == 200
    emulator.configure(fault_oauth=True)
    assert emulator.oauth().status_code == 500


def test_reset_clears_log_tokens_and_files(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    files = {"file": ("a.txt", b"abc", "text/plain")}
    assert emulator.session.post(f"{emulator.api_url}/files", headers=headers, files=files).status_code == 200
    assert emulator.calls()["count"] == 2
    emulator.control("POST", "reset")
    assert emulator.calls()["count"] == 0
    assert emulator.control("GET", "stats")["files"] == 0
    assert chat(emulator, headers).json()["message"] == "Unauthorized"


def test_file_content_round_trip(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    data = bytes(range(256)) * 40
    files = {"file": ("pic.png", data, "image/png")}
    uploaded = emulator.session.post(
        f"{emulator.api_url}/files", headers=headers, files=files, data={"purpose": "general"}
    )
    file_id = uploaded.json()["id"]
    content = emulator.session.get(f"{emulator.api_url}/files/{file_id}/content", headers=headers)
    assert (content.status_code, content.content, content.headers["Content-Type"]) == (200, data, "image/png")
    deleted = emulator.session.post(f"{emulator.api_url}/files/{file_id}/delete", headers=headers)
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True, "access_policy": "private"}
    gone = emulator.session.get(f"{emulator.api_url}/files/{file_id}/content", headers=headers)
    assert (gone.status_code, gone.json()["status"]) == (404, 404)


def test_keep_alive_connection_serves_many_requests(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
        request = (
            f"GET /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: {headers['Authorization']}\r\n\r\n"
        ).encode()
        for _ in range(3):
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            header_block, _, rest = head.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in header_block.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(rest) < length:
                rest += sock.recv(65536)
            assert json.loads(rest)["object"] == "list"


def test_parallel_slow_calls_overlap(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    emulator.configure(latency=1.0)
    durations: list[float] = []

    def one() -> None:
        started = time.monotonic()
        assert requests.post(
            f"{emulator.api_url}/chat/completions", headers=headers, json=BODY, timeout=30
        ).ok
        durations.append(time.monotonic() - started)

    threads = [threading.Thread(target=one) for _ in range(32)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(durations) == 32
    assert time.monotonic() - started < 3.0


# --- per model (gigachat_emulator/per_model.py) ---


def test_an_outage_of_one_model_leaves_the_others_answering(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    emulator.control("POST", "outage", json={"seconds": 30, "model": "GigaChat-2-Max"})
    down = chat(emulator, headers, {**BODY, "model": "GigaChat-2-Max"})
    assert (down.status_code, down.json()) == (503, {"status": 503, "message": "Service Unavailable"})
    assert chat(emulator, headers, {**BODY, "model": "GigaChat-2-Pro"}).status_code == 200
    assert chat(emulator, headers).status_code == 200
    emulator.control("POST", "outage", json={"seconds": 0, "model": "GigaChat-2-Max"})
    assert chat(emulator, headers, {**BODY, "model": "GigaChat-2-Max"}).status_code == 200
    emulator.control("POST", "outage", json={"seconds": 30, "model": "GigaChat-2-Max"})
    emulator.control("POST", "reset")  # a reset ends per-model outages too (and forgets tokens)
    assert chat(emulator, bearer(emulator), {**BODY, "model": "GigaChat-2-Max"}).status_code == 200


def test_per_model_error_rate_and_latency(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    config = emulator.configure(model_error_rate="GigaChat-2=1", model_latency={"GigaChat-2-Pro": 0.4})
    assert config["model_error_rate"] == {"GigaChat-2": 1.0}
    assert config["model_latency"] == {"GigaChat-2-Pro": 0.4}
    assert chat(emulator, headers, {**BODY, "model": "GigaChat-2"}).status_code in (500, 429, 503)
    started = time.monotonic()
    assert chat(emulator, headers, {**BODY, "model": "GigaChat-2-Pro"}).status_code == 200
    assert time.monotonic() - started >= 0.4
    assert chat(emulator, headers).status_code == 200  # the other models keep the global settings
    bad = requests.post(f"{emulator.base_url}/_emulator/config", json={"model_error_rate": "X=2"}, timeout=10)
    assert bad.status_code == 400


def test_tokens_count_agrees_with_the_billed_prompt_tokens(emulator: EmulatorProcess) -> None:
    headers = bearer(emulator)
    messages = [
        {"role": "system", "content": "Ты помощник, отвечай кратко."},
        {"role": "user", "content": "Summarise: the quarterly report, 2026 (draft) — revenue grew 12%."},
    ]
    counted = emulator.session.post(
        f"{emulator.api_url}/tokens/count",
        headers=headers,
        json={"model": "GigaChat", "input": [m["content"] for m in messages]},
        timeout=30,
    ).json()
    billed = chat(emulator, headers, {"model": "GigaChat", "messages": messages}).json()["usage"]
    # Billed prompt = the counted tokens of each message + 3 per message for the role markers.
    assert billed["prompt_tokens"] == sum(c["tokens"] for c in counted) + 3 * len(messages)
