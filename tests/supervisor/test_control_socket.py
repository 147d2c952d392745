"""The status socket server on a real selector and a real Unix socket in tmp_path (no threads, no sleep)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from llm_service.errors import ConfigError
from llm_service.socket_protocol import Request
from supervisor.control_socket import BATCH, ControlServer


class Served(NamedTuple):
    server: ControlServer
    selector: selectors.BaseSelector
    seen: list[Request]  # what the handler was asked, in order


def connect(server: ControlServer) -> socket.socket:
    """A client connected to ``server`` (blocking until the test says otherwise)."""
    client = socket.socket(socket.AF_UNIX)
    client.connect(server.path)
    return client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    selector = selectors.DefaultSelector()
    seen: list[Request] = []

    def handler(request: Request) -> dict[str, Any]:
        seen.append(request)
        return {"ok": True, "cmd": request.cmd}

    server = ControlServer(path=str(tmp_path / "s.sock"), selector=selector, handler=handler)
    server.open()
    yield Served(server, selector, seen)
    server.close()
    selector.close()


def pump(selector: selectors.BaseSelector, rounds: int = 5) -> None:
    for _ in range(rounds):
        for key, mask in selector.select(0.05):
            key.data(mask)


def test_socket_mode_is_0660(served: Served) -> None:
    server, _, _ = served
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660


def test_one_reply_per_line_in_order(served: Served) -> None:
    server, selector, seen = served
    client = connect(server)
    client.sendall(b'{"cmd":"status"}\n{"cmd":"scale","n":2}\n{"cmd":"nope"}\n{"cmd":"hea')
    pump(selector)
    client.sendall(b'lth"}\n')
    pump(selector)
    client.settimeout(2)
    replies = client.makefile("rb")
    got = [json.loads(replies.readline()) for _ in range(4)]
    assert [g.get("cmd") for g in got] == ["status", "scale", None, "health"]
    assert got[2]["ok"] is False and "unknown cmd" in got[2]["error"]
    assert seen[1] == Request(cmd="scale", n=2)
    client.close()
    pump(selector)


def test_oversized_request_is_refused(served: Served) -> None:
    server, selector, _ = served
    client = connect(server)
    client.sendall(b"x" * 70_000)
    pump(selector, 10)
    client.settimeout(2)
    assert b"longer than" in client.makefile("rb").readline()


def test_a_live_server_is_not_displaced_and_a_stale_file_is_replaced(served: Served, tmp_path: Path) -> None:
    server, selector, _ = served
    with pytest.raises(ConfigError, match="another supervisor"):
        ControlServer(path=server.path, selector=selector, handler=lambda r: {}).open()
    stale = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()
    other = ControlServer(path=str(stale), selector=selector, handler=lambda r: {})
    other.open()
    other.close()
    assert not stale.exists()


def registered_fds(selector: selectors.BaseSelector) -> int:
    return len(selector.get_map())


def test_a_client_that_hangs_up_after_its_reply_is_unregistered_and_closed(served: Served) -> None:
    """The fd leak of issue 7: on EOF with an empty outbox nothing closed the client, epoll spun."""
    server, selector, _ = served
    idle = registered_fds(selector)
    for _ in range(50):
        client = connect(server)
        client.sendall(b'{"cmd":"status"}\n')
        pump(selector, 2)
        client.settimeout(2)
        assert json.loads(client.makefile("rb").readline())["ok"] is True
        client.close()
        pump(selector, 2)
    assert server.client_count == 0
    assert registered_fds(selector) == idle
    assert selector.select(0.05) == []  # nothing left to wake the loop


def test_a_half_closed_client_still_gets_its_reply(served: Served) -> None:
    server, selector, _ = served
    client = connect(server)
    client.sendall(b'{"cmd":"status"}\n{"cmd":"health"}\n')
    client.shutdown(socket.SHUT_WR)  # `printf ... | nc -U`: request sent, then EOF
    pump(selector, 5)
    client.settimeout(2)
    lines = client.makefile("rb").readlines()
    assert [json.loads(x)["cmd"] for x in lines] == ["status", "health"]
    assert server.client_count == 0


def test_a_handler_bug_gives_one_error_reply_and_the_next_client_is_served(tmp_path: Path) -> None:
    selector = selectors.DefaultSelector()

    def handler(request: Request) -> dict[str, Any]:
        if request.cmd == "reload":
            raise RuntimeError("a bug")
        if request.cmd == "health":
            return {"ok": True, "x": float("nan")}  # not encodable as JSON (allow_nan=False)
        return {"ok": True, "cmd": request.cmd}

    server = ControlServer(path=str(tmp_path / "s.sock"), selector=selector, handler=handler)
    server.open()
    try:
        client = connect(server)
        client.sendall(b'{"cmd":"reload"}\n{"cmd":"health"}\n{"cmd":"status"}\n')
        pump(selector)
        client.settimeout(2)
        replies = client.makefile("rb")
        got = [json.loads(replies.readline()) for _ in range(3)]
        assert got[0] == {"ok": False, "error": "internal error: RuntimeError"}
        assert got[1]["ok"] is False and got[2] == {"ok": True, "cmd": "status"}
        client.close()
    finally:
        server.close()
        selector.close()


def test_pipelined_requests_are_all_answered_in_bounded_batches(served: Served) -> None:
    server, selector, seen = served
    client = connect(server)
    client.setblocking(False)
    payload = b'{"cmd":"status"}\n' * 3000
    received = bytearray()
    for _ in range(5000):
        if payload:
            with contextlib.suppress(BlockingIOError):
                payload = payload[client.send(payload) :]
        before = len(seen)
        for key, mask in selector.select(0.05):
            key.data(mask)
        assert len(seen) - before <= BATCH  # one wake-up answers at most BATCH lines
        with contextlib.suppress(BlockingIOError):
            received += client.recv(1 << 20)
        if received.count(b"\n") == 3000:
            break
    assert received.count(b"\n") == 3000
    client.close()


def test_a_greedy_client_that_never_reads_does_not_starve_another(served: Served) -> None:
    server, selector, seen = served
    greedy = connect(server)
    greedy.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        for _ in range(100_000):
            greedy.send(b'{"cmd":"status"}\n' * 64)  # until its send buffer and our backlog are full
    pump(selector, 50)
    answered = len(seen)
    pump(selector, 20)
    assert len(seen) == answered  # it reads nothing, so it is no longer served: bounded outbox
    polite = connect(server)
    polite.sendall(b'{"cmd":"health"}\n')
    pump(selector, 5)
    polite.settimeout(2)
    assert json.loads(polite.makefile("rb").readline())["cmd"] == "health"
    polite.close()
    greedy.close()
    pump(selector, 5)
    assert server.client_count == 0
