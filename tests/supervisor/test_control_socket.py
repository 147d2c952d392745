"""The status socket server on a real selector and a real Unix socket in tmp_path (no threads, no sleep)."""

from __future__ import annotations

import json
import os
import selectors
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_service.errors import ConfigError
from supervisor.control_socket import ControlServer
from supervisor.protocol import Request


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ControlServer, selectors.BaseSelector, list[Request]]]:
    selector = selectors.DefaultSelector()
    seen: list[Request] = []

    def handler(request: Request) -> dict[str, Any]:
        seen.append(request)
        return {"ok": True, "cmd": request.cmd}

    server = ControlServer(path=str(tmp_path / "s.sock"), selector=selector, handler=handler)
    server.open()
    yield server, selector, seen
    server.close()
    selector.close()


def pump(selector: selectors.BaseSelector, rounds: int = 5) -> None:
    for _ in range(rounds):
        for key, mask in selector.select(0.05):
            key.data(mask)


def test_socket_mode_is_0660(served: tuple[ControlServer, selectors.BaseSelector, list[Request]]) -> None:
    server, _, _ = served
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660


def test_one_reply_per_line_in_order(
    served: tuple[ControlServer, selectors.BaseSelector, list[Request]],
) -> None:
    server, selector, seen = served
    client = socket.socket(socket.AF_UNIX)
    client.connect(server.path)
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


def test_oversized_request_is_refused(
    served: tuple[ControlServer, selectors.BaseSelector, list[Request]],
) -> None:
    server, selector, _ = served
    client = socket.socket(socket.AF_UNIX)
    client.connect(server.path)
    client.sendall(b"x" * 70_000)
    pump(selector, 10)
    client.settimeout(2)
    assert b"longer than" in client.makefile("rb").readline()


def test_a_live_server_is_not_displaced_and_a_stale_file_is_replaced(
    served: tuple[ControlServer, selectors.BaseSelector, list[Request]], tmp_path: Path
) -> None:
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
