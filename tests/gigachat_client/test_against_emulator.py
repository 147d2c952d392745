"""The client against the real GigaChat emulator process: tokens, faults, outage, concurrency limit.

One emulator per module (reset before each test), on a free port, always killed at the end. The
emulator is a required component: if it cannot start, these tests fail rather than skip.
"""

from __future__ import annotations

import http.server
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from devstack.emulator import AUTH_KEY
from devstack.emulator import Emulator as StackEmulator
from devstack.procs import free_port
from llm_service.config import Settings
from llm_service.errors import BreakerOpenError, PermanentTaskError, TaskError, TransientTaskError
from llm_service.log_lines import BREAKER_OPEN
from llm_service.status_table import Breaker
from llm_worker.gigachat import BreakerSet, ChatResult, ConcurrencyLimiter, GigaChatClient, ModelBreaker
from llm_worker.gigachat.limiter import read_cap
from tests.gigachat_client.fakes import make_settings

OAUTH_PATH = "/api/v2/oauth"
CHAT_PATH = "/api/v1/chat/completions"


@dataclass
class Emulator:
    base: str

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}/_emulator/{path}"
        answer = (
            requests.post(url, json=body, timeout=5) if body is not None else requests.get(url, timeout=5)
        )
        answer.raise_for_status()
        return answer.json()

    def calls(self, endpoint: str, **query: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.base}/_emulator/calls", params=query, timeout=5).json()
        return [c for c in answer["calls"] if c["endpoint"] == endpoint]


@pytest.fixture(scope="module")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The emulator as the local stack runs it (devstack's launcher: health wait, TERM then KILL)."""
    process = StackEmulator(
        run_dir=tmp_path_factory.mktemp("emulator"), port=free_port(), extra_args=("--log-level", "WARNING")
    )
    process.start()
    try:
        yield Emulator(process.url)
    finally:
        process.stop()


@pytest.fixture
def emulator(emulator_process: Emulator) -> Emulator:
    emulator_process.control("outage", {"seconds": 0})
    emulator_process.control("reset", {})
    emulator_process.control(
        "config",
        {
            "latency": 0,
            "error_rate": 0,
            "error_codes": [500, 429, 503],
            "hang_rate": 0,
            "token_ttl": 1800,
            "max_concurrency": 0,
            "retry_after": None,
        },
    )
    return emulator_process


def settings_for(emulator: Emulator, tmp_path: Path, **overrides: Any) -> Settings:
    """The fakes' settings aimed at the emulator, with a short timeout and short backoffs."""
    at_emulator: dict[str, Any] = {
        "gigachat_auth_url": f"{emulator.base}{OAUTH_PATH}",
        "gigachat_api_url": f"{emulator.base}/api/v1",
        "gigachat_auth_key": AUTH_KEY,  # the emulator's, not the fakes' secret
        "gigachat_timeout_s": 5.0,
        "gigachat_backoff_base_s": 0.05,
        "gigachat_backoff_max_s": 0.5,
    }
    return make_settings(tmp_path, **(at_emulator | overrides))


def chats_from_threads(
    threads: int, calls_each: int, call: Callable[[int, int], object], *, timeout: float
) -> list[TaskError]:
    """``call(thread, i)`` ``calls_each`` times in each of ``threads`` threads; the TaskErrors raised."""
    errors: list[TaskError] = []

    def worker(n: int) -> None:
        for i in range(calls_each):
            try:
                call(n, i)
            except TaskError as exc:
                errors.append(exc)

    started = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join(timeout)
    return errors


def make_client(settings: Settings, limiter: ConcurrencyLimiter | None = None) -> GigaChatClient:
    return GigaChatClient(
        settings=settings,
        limiter=limiter or ConcurrencyLimiter.from_settings(settings),
        breakers=BreakerSet.from_settings(settings),
    )


def chat(client: GigaChatClient, task_id: str, deadline_s: float = 30.0) -> ChatResult:
    return client.chat(
        task_id=task_id,
        messages=[{"role": "user", "content": "Привет! Ответь одним словом."}],
        model="GigaChat",
        params={"max_tokens": 16},
        deadline=time.monotonic() + deadline_s,
    )


def test_chat_works_and_the_task_id_reaches_the_server(emulator: Emulator, tmp_path: Path) -> None:
    client = make_client(settings_for(emulator, tmp_path))
    client.check()

    result = chat(client, "emu-1")

    assert result.content
    assert result.total_tokens == result.prompt_tokens + result.completion_tokens > 0
    calls = emulator.calls(CHAT_PATH, request_id="emu-1")
    assert [(c["status"], c["session_id"]) for c in calls] == [(200, "emu-1")]
    client.close()


def test_check_with_a_wrong_key_is_auth_failed(emulator: Emulator, tmp_path: Path) -> None:
    client = make_client(settings_for(emulator, tmp_path, gigachat_auth_key="d3Jvbmc6a2V5"))

    with pytest.raises(PermanentTaskError) as caught:
        client.check()

    assert caught.value.code == "AUTH_FAILED"
    assert "d3Jvbmc6a2V5" not in str(caught.value)


def test_short_lived_tokens_are_refreshed_ahead_without_failures(emulator: Emulator, tmp_path: Path) -> None:
    emulator.control("config", {"token_ttl": 2, "latency": 0.05})
    client = make_client(settings_for(emulator, tmp_path))

    end = time.monotonic() + 6.0
    done = 0
    while time.monotonic() < end:
        chat(client, f"ttl-{done}")
        done += 1

    chats = emulator.calls(CHAT_PATH)
    assert {c["status"] for c in chats} == {200}  # not even a 401 on the way
    assert len(chats) == done
    assert len(emulator.calls(OAUTH_PATH)) >= 3


def test_injected_500_and_429_are_retried_until_every_call_succeeds(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.control("config", {"error_rate": 0.3, "error_codes": [500, 429]})
    settings = settings_for(emulator, tmp_path, gigachat_call_attempts=12, gigachat_breaker_fail_max=50)
    client = make_client(settings)
    errors = chats_from_threads(4, 6, lambda n, i: chat(client, f"err-{n}-{i}"), timeout=60)

    assert errors == []
    statuses = [c["status"] for c in emulator.calls(CHAT_PATH)]
    assert statuses.count(200) == 24
    assert {500, 429} <= set(statuses)  # faults really were injected and retried


def test_hung_calls_time_out_and_are_retried(emulator: Emulator, tmp_path: Path) -> None:
    emulator.control("config", {"hang_rate": 0.4})
    settings = settings_for(
        emulator, tmp_path, gigachat_timeout_s=0.3, gigachat_call_attempts=10, gigachat_breaker_fail_max=50
    )
    client = make_client(settings)

    for i in range(5):
        chat(client, f"hang-{i}")

    statuses = [c["status"] for c in emulator.calls(CHAT_PATH)]
    assert statuses.count(200) == 5
    assert len(statuses) > 5  # some calls hung, timed out on our side and were sent again


def _poll_until_closed(client: GigaChatClient, breaker: ModelBreaker, until: float) -> int:
    """Keep calling (as the pipeline would after 'retry later') until a probe closes the breaker."""
    refused = 0
    while time.monotonic() < until:
        try:
            chat(client, "probe", deadline_s=5)
            return refused
        except BreakerOpenError:
            refused += 1
        except TransientTaskError:
            pass  # a probe during the outage: the breaker re-opens
        time.sleep(0.05)
    pytest.fail(f"the breaker did not close; state {breaker.state.name}")


def test_outage_opens_the_breaker_which_fails_fast_and_closes_after(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_worker.gigachat.breaker")
    settings = settings_for(emulator, tmp_path, gigachat_breaker_fail_max=3, gigachat_breaker_reset_s=1.0)
    breakers = BreakerSet.from_settings(settings)
    breaker = breakers.get("GigaChat")
    states: list[Breaker] = []
    breaker.on_change(states.append)
    client = GigaChatClient(
        settings=settings, limiter=ConcurrencyLimiter.from_settings(settings), breakers=breakers
    )
    chat(client, "before")  # a token in hand before OAuth goes down too
    emulator.control("outage", {"seconds": 5})
    outage_end = time.monotonic() + 5

    with pytest.raises(TransientTaskError) as first:
        chat(client, "during")
    assert not isinstance(first.value, BreakerOpenError)
    assert breaker.state is Breaker.OPEN
    assert BREAKER_OPEN % 3 in caplog.messages
    assert "Circuit breaker OPEN for model GigaChat" in caplog.messages
    sent = len(emulator.calls(CHAT_PATH))
    started = time.monotonic()
    with pytest.raises(BreakerOpenError):
        chat(client, "refused")
    assert time.monotonic() - started < 0.5  # no backoff, no HTTP
    assert len(emulator.calls(CHAT_PATH)) == sent  # refused calls never reach the server

    refused = _poll_until_closed(client, breaker, until=outage_end + 10)

    assert time.monotonic() >= outage_end - 0.5
    assert breaker.failure_count == 0
    assert refused > 0
    assert states[0] is Breaker.OPEN and states[-2:] == [Breaker.HALF_OPEN, Breaker.CLOSED]


def test_host_limiter_adapts_to_a_one_stream_account(emulator: Emulator, tmp_path: Path) -> None:
    emulator.control("config", {"max_concurrency": 1, "latency": 0.05})
    settings = settings_for(emulator, tmp_path, gigachat_max_concurrency=4, gigachat_call_attempts=20)
    # Two "worker processes": separate limiter instances on one directory share permits and cap.
    limiters = [ConcurrencyLimiter.from_settings(settings) for _ in range(2)]
    clients = [make_client(settings, lim) for lim in limiters]
    caps: list[int] = []

    def call(n: int, i: int) -> None:
        try:
            chat(clients[n % 2], f"lim-{n}-{i}")
        finally:
            caps.append(limiters[0].cap)

    errors = chats_from_threads(8, 3, call, timeout=60)

    statuses = [c["status"] for c in emulator.calls(CHAT_PATH)]
    assert errors == []
    assert statuses.count(200) == 24
    assert 429 in statuses
    assert min(caps) < 4
    seen = sorted(set(caps))
    print(f"\nlimiter vs 1-stream account: {statuses.count(429)} x 429 for 24 calls, caps seen {seen}")


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: takes the absolute-URI requests a client sends to a proxy and passes
    them on, noting each URL (the class attribute ``seen`` is set per test)."""

    seen: ClassVar[list[str]] = []

    def _forward(self) -> None:
        self.seen.append(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection")}
        with requests.Session() as session:
            session.trust_env = False
            answer = session.request(self.command, self.path, headers=headers, data=body, timeout=10)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def log_message(self, *args: Any) -> None:
        pass


def test_proxy_variables_are_honoured_though_read_once(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session no longer reads the environment per request (client.make_session): HTTP_PROXY still
    routes every call, token and chat, through the proxy, and NO_PROXY still exempts a host."""
    _ForwardProxy.seen = []
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = make_client(settings_for(emulator, tmp_path))
        chat(client, "via-proxy")
        client.close()
        assert any(url.endswith(OAUTH_PATH) for url in _ForwardProxy.seen)
        assert any(url.endswith(CHAT_PATH) for url in _ForwardProxy.seen)
        assert len(emulator.calls(CHAT_PATH, request_id="via-proxy")) == 1

        _ForwardProxy.seen = []
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        direct = make_client(settings_for(emulator, tmp_path))
        chat(direct, "direct")
        direct.close()
        assert _ForwardProxy.seen == []
        assert len(emulator.calls(CHAT_PATH, request_id="direct")) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_files_upload_and_delete(emulator: Emulator, tmp_path: Path) -> None:
    client = make_client(settings_for(emulator, tmp_path))

    file_id = client.upload_file(
        task_id="file-1",
        filename="doc.txt",
        data="Текст".encode(),
        content_type="text/plain",
        deadline=time.monotonic() + 10,
    )
    client.delete_file(task_id="file-1", file_id=file_id)
    client.delete_file(task_id="file-1", file_id=file_id)  # twice: already gone is fine

    assert file_id


def test_the_cap_settles_at_or_below_the_accounts_limit_with_few_429s(
    emulator: Emulator, tmp_path: Path
) -> None:
    # Sanity, not timing: an account allowing 3 streams, a host allowing 16, two "processes".
    emulator.control("config", {"max_concurrency": 3, "latency": 0.1})
    settings = settings_for(emulator, tmp_path, gigachat_max_concurrency=16, gigachat_call_attempts=20)
    limiters = [ConcurrencyLimiter.from_settings(settings) for _ in range(2)]
    clients = [make_client(settings, lim) for lim in limiters]
    errors = chats_from_threads(
        8, 8, lambda n, i: chat(clients[n % 2], f"acct-{n}-{i}", deadline_s=120), timeout=120
    )

    statuses = [c["status"] for c in emulator.calls(CHAT_PATH)]
    record = read_cap(limiters[0].directory)
    assert errors == [] and statuses.count(200) == 64
    assert record is not None and record.cap <= 3 and record.ceiling in (4, 5)  # learnt: 4 is refused
    assert statuses.count(429) <= 6  # the slow start's overshoot, not one every few calls
    print(f"\ncap vs 3-stream account: {statuses.count(429)} x 429 for 64 calls, cap {record}")


def test_long_calls_open_the_cap_before_any_call_has_ended(emulator: Emulator, tmp_path: Path) -> None:
    # Two real processes of 16 threads (bench/account_direct.py's caller), calls of 10 s, an account
    # without a limit. Growing only on successes, the cap would let 2 calls start before the first
    # one ended; growing while every place is taken and no 429 comes, all 16 are in flight together.
    emulator.control("config", {"latency": 10})
    argv = [sys.executable, "-m", "bench.account_direct", "--child", emulator.base, str(tmp_path / "limiter")]
    children = [subprocess.Popen([*argv, "8"], cwd=Path(__file__).parents[2]) for _ in range(2)]
    codes = [child.wait(timeout=120) for child in children]

    calls = emulator.calls(CHAT_PATH)
    starts = sorted(c["ts"] - c["duration_ms"] / 1000 for c in calls)
    first_end = min(c["ts"] for c in calls)
    assert codes == [0, 0]
    assert [c["status"] for c in calls] == [200] * 16  # and not one 429
    assert starts[-1] < first_end
    record = read_cap(next((tmp_path / "limiter").iterdir()))  # the account's directory in it
    assert record is not None and record.cap >= 16 and record.ceiling == 0
