from __future__ import annotations

import contextlib
import json
import random

import pytest

from llm_service.socket_protocol import ProtocolError, Request, encode_reply, encode_request, parse_request


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


HOSTILE_LINES = [
    b"[" * 100_000,  # RecursionError inside json
    b'{"cmd": "scale", "n": ' + b"9" * 5000 + b"}",  # int of more than 4300 digits: ValueError
    b'{"cmd": "scale", "n": 1e400}',
    b'{"cmd": "scale", "n": NaN}',
    b'{"cmd": "scale", "n": Infinity}',
    b'{"cmd": "' + b"x" * 60_000 + b'"}',
    b'{"cmd": "status"\xff}',
    b"\x00" * 1000,
    bytes(range(256)),
]


@pytest.mark.parametrize("line", HOSTILE_LINES, ids=lambda b: repr(b[:24]))
def test_hostile_lines_raise_only_protocol_error_with_a_short_message(line: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(line)
    assert len(str(caught.value)) < 400


def test_random_bytes_never_escape_as_another_exception() -> None:

    rng = random.Random(7)
    alphabet = b'{}[]":,0123456789.eE-+ntruefalsecmdstatusscale\\\xff\x00'
    for _ in range(5000):
        line = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        with contextlib.suppress(ProtocolError):
            parse_request(line)
