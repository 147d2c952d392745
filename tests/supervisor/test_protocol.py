from __future__ import annotations

import json

import pytest

from supervisor.protocol import ProtocolError, Request, encode_reply, encode_request, parse_request


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"cmd": "status"}', Request(cmd="status")),
        (b'{"cmd": "health"}\n', Request(cmd="health")),
        (b'{"cmd": "scale", "n": 3}', Request(cmd="scale", n=3)),
        (b'{"cmd": "drain", "extra": 1}', Request(cmd="drain")),
    ],
)
def test_good_requests(line: bytes, expected: Request) -> None:
    assert parse_request(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"status", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"cmd": 1}', "JSON object"),
        (b'{"cmd": "reboot"}', "unknown cmd"),
        (b'{"cmd": "scale"}', "scale needs"),
        (b'{"cmd": "scale", "n": -1}', "scale needs"),
        (b'{"cmd": "scale", "n": true}', "scale needs"),
        (b'{"cmd": "scale", "n": "2"}', "scale needs"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_bad_requests(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_request(line)


def test_encoding_is_one_line() -> None:
    assert encode_request("scale", n=2) == b'{"cmd": "scale", "n": 2}\n'
    reply = encode_reply({"ok": True, "text": "a\nb"})
    assert reply.count(b"\n") == 1 and json.loads(reply) == {"ok": True, "text": "a\nb"}
