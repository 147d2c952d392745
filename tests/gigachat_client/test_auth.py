"""TokenProvider: OAuth request shape, caching, refresh ahead of expiry, single flight, errors."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import requests

from llm_service.errors import PermanentTaskError, TransientTaskError
from llm_worker.gigachat.auth import TokenProvider, refresh_margin
from tests.gigachat_client.fakes import (
    AUTH_KEY,
    AUTH_URL,
    FakeClock,
    FakeSession,
    Script,
    Sent,
    make_settings,
    response,
    token_response,
    wall_zero,
)


def provider(tmp_path: Path, session: FakeSession, clock: FakeClock, **settings: object) -> TokenProvider:
    return TokenProvider(
        settings=make_settings(tmp_path, **settings),
        session=session,
        clock=clock,
        wall_clock=wall_zero,
        sleep=clock.sleep,
        rng=lambda: 1.0,
    )


def test_oauth_request_carries_key_verbatim_fresh_rquid_and_scope(tmp_path: Path) -> None:
    session = FakeSession(Script(oauth=[token_response("a", 1.0), token_response("b", 1800)]))
    clock = FakeClock()
    tokens = provider(tmp_path, session, clock, gigachat_scope="GIGACHAT_API_CORP")

    assert tokens.get(deadline=clock() + 30) == "a"
    clock.advance(5)  # "a" lived 1 s: the next get must fetch again
    assert tokens.get(deadline=clock() + 30) == "b"

    first, second = session.to(AUTH_URL)
    assert first.method == "POST"
    assert first.headers["Authorization"] == f"Basic {AUTH_KEY}"
    assert first.headers["Accept"] == "application/json"
    assert first.kwargs["data"] == {"scope": "GIGACHAT_API_CORP"}
    assert uuid.UUID(first.headers["RqUID"]).version == 4
    assert first.headers["RqUID"] != second.headers["RqUID"]


def test_margin_is_minutes_for_real_tokens_and_a_fifth_for_short_ones() -> None:
    assert refresh_margin(1800) == 180  # 10 % of 30 min
    assert refresh_margin(300) == 60  # at least a minute ...
    assert refresh_margin(5) == 1  # ... but never more than 20 % of the lifetime
    assert refresh_margin(2) == pytest.approx(0.4)


def test_token_is_cached_until_the_refresh_point(tmp_path: Path) -> None:
    session = FakeSession(Script(oauth=[token_response("a"), token_response("b")]))
    clock = FakeClock()
    tokens = provider(tmp_path, session, clock)

    for _ in range(5):
        assert tokens.get(deadline=clock() + 30) == "a"
    clock.advance(1800 - 181)  # just before the refresh point (180 s ahead)
    assert tokens.get(deadline=clock() + 30) == "a"
    clock.advance(2)
    assert tokens.get(deadline=clock() + 30) == "b"
    assert len(session.to(AUTH_URL)) == 2


def _gated_session(script: Script) -> tuple[FakeSession, threading.Event, threading.Event]:
    """A session whose OAuth call blocks until released, to hold a refresh in flight."""
    entered, release = threading.Event(), threading.Event()

    def hold(sent: Sent) -> None:
        if sent.url.startswith(AUTH_URL):
            entered.set()
            release.wait(10)

    return FakeSession(script, on_send=hold), entered, release


def _run_threads(n: int, target: object) -> list[threading.Thread]:
    threads = [threading.Thread(target=target) for _ in range(n)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    return threads


def test_sixteen_threads_without_a_token_cause_one_oauth_call(tmp_path: Path) -> None:
    session, entered, release = _gated_session(Script(oauth=[token_response("a")]))
    clock = FakeClock()
    tokens = provider(tmp_path, session, clock)
    got: list[str] = []
    threads = _run_threads(16, lambda: got.append(tokens.get(deadline=clock() + 30)))

    assert entered.wait(5)
    release.set()
    for t in threads:
        t.join(10)

    assert got == ["a"] * 16
    assert len(session.to(AUTH_URL)) == 1


def test_refresh_ahead_is_single_flight_and_does_not_block_others(tmp_path: Path) -> None:
    session, entered, release = _gated_session(Script(oauth=[token_response("a"), token_response("b")]))
    clock = FakeClock()
    tokens = provider(tmp_path, session, clock)
    release.set()
    assert tokens.get(deadline=clock() + 30) == "a"
    release.clear()
    entered.clear()
    clock.advance(1700)  # inside the refresh window, "a" still usable

    refresher = _run_threads(1, lambda: tokens.get(deadline=clock() + 30))
    assert entered.wait(5)
    # While the refresh is in flight, other threads keep using "a" at once.
    others: list[str] = []
    for t in _run_threads(15, lambda: others.append(tokens.get(deadline=clock() + 30))):
        t.join(5)
    assert others == ["a"] * 15
    release.set()
    refresher[0].join(5)

    assert tokens.get(deadline=clock() + 30) == "b"
    assert len(session.to(AUTH_URL)) == 2


def test_invalidate_forgets_only_the_rejected_token(tmp_path: Path) -> None:
    session = FakeSession(Script(oauth=[token_response("a"), token_response("b")]))
    clock = FakeClock()
    tokens = provider(tmp_path, session, clock)
    assert tokens.get(deadline=clock() + 30) == "a"

    tokens.invalidate("stale-from-another-thread")
    assert tokens.get(deadline=clock() + 30) == "a"
    tokens.invalidate("a")
    assert tokens.get(deadline=clock() + 30) == "b"


@pytest.mark.parametrize("status", [400, 401])
def test_oauth_rejecting_the_key_is_permanent_auth_failed(tmp_path: Path, status: int) -> None:
    body = {"code": 6, "message": f"credentials doesn't match db data {AUTH_KEY}"}
    session = FakeSession(Script(oauth=[response(status, body)]))
    clock = FakeClock()

    with pytest.raises(PermanentTaskError) as caught:
        provider(tmp_path, session, clock).get(deadline=clock() + 30)

    assert caught.value.code == "AUTH_FAILED"
    assert f"HTTP {status}" in str(caught.value)
    assert AUTH_KEY not in str(caught.value)  # even when the server echoes it
    assert len(session.to(AUTH_URL)) == 1


def test_oauth_429_5xx_and_transport_errors_are_retried_with_backoff(tmp_path: Path) -> None:
    answers: list[requests.Response | Exception] = [
        response(429, {"code": 429, "message": "Too many requests"}, {"Retry-After": "2"}),
        response(503, "<html>gateway</html>"),
        requests.ConnectionError("connection refused"),
        token_response("a"),
    ]
    session = FakeSession(Script(oauth=answers))
    clock = FakeClock()

    assert provider(tmp_path, session, clock).get(deadline=clock() + 60) == "a"
    assert clock.sleeps == [2.0, 1.0, 2.0]  # Retry-After, then 0.5*2^1, 0.5*2^2 (rng = 1)


def test_oauth_unreachable_ends_transient_without_the_key(tmp_path: Path) -> None:
    session = FakeSession(Script(oauth=[requests.ConnectionError("refused")]))
    clock = FakeClock()

    with pytest.raises(TransientTaskError) as caught:
        provider(tmp_path, session, clock).get(deadline=clock() + 60)

    assert caught.value.code == "AUTH_UNAVAILABLE"
    assert "after 4 attempts" in str(caught.value)
    assert AUTH_KEY not in repr(caught.value) and AUTH_KEY not in repr(caught.value.__cause__)


def test_empty_key_fails_permanently_without_calling_oauth(tmp_path: Path) -> None:
    session = FakeSession(Script())
    clock = FakeClock()

    with pytest.raises(PermanentTaskError, match="GIGACHAT_AUTH_KEY is not set"):
        provider(tmp_path, session, clock, gigachat_auth_key="").get(deadline=clock() + 30)
    assert session.sent == []
