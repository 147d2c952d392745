"""The status socket server, served from the supervisor's own selector loop: non-blocking, no threads.

Runs in the supervisor process. Each registered file object carries a callback as its selector
data; the main loop calls it when the fd is ready. A slow or silent client costs a buffer, never a
wait: reads and writes are non-blocking, lines are capped at MAX_LINE, and clients are capped at
MAX_CLIENTS (the oldest is dropped).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_service.errors import ConfigError
from supervisor.protocol import MAX_LINE, ProtocolError, Request, encode_reply, error_reply, parse_request

log = logging.getLogger(__name__)

MAX_CLIENTS = 32
Handler = Callable[[Request], dict[str, Any]]
Callback = Callable[[int], None]


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    closing: bool = False


class ControlServer:
    """A Unix stream socket at ``path`` (mode 0660) answering one JSON line with one JSON line."""

    def __init__(self, *, path: str, selector: selectors.BaseSelector, handler: Handler) -> None:
        self.path = path
        self._selector = selector
        self._handler = handler
        self._listener: socket.socket | None = None
        self._clients: list[_Client] = []

    def open(self) -> None:
        """Bind, or raise ConfigError when another supervisor already answers at the path."""
        _remove_stale(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o117)  # create it 0660 at once: no window with wider permissions
        try:
            listener.bind(self.path)
        except OSError as exc:
            listener.close()
            raise ConfigError(f"SUPERVISOR_SOCKET={self.path!r}: cannot bind: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, self._accept)

    def _accept(self, mask: int) -> None:
        if self._listener is None:
            return
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        if len(self._clients) >= MAX_CLIENTS:
            self._drop(self._clients[0])
        client = _Client(sock)
        self._clients.append(client)
        self._selector.register(sock, selectors.EVENT_READ, lambda m: self._service(client, m))

    def _service(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self._read(client)
        if mask & selectors.EVENT_WRITE or client.outbox:
            self._write(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            client.closing = True
            return
        client.inbox += data
        while b"\n" in client.inbox:
            line, _, rest = bytes(client.inbox).partition(b"\n")
            client.inbox = bytearray(rest)
            client.outbox += encode_reply(self._answer(line))
        if len(client.inbox) > MAX_LINE:
            client.outbox += encode_reply(error_reply(f"request longer than {MAX_LINE} bytes"))
            client.inbox.clear()
            client.closing = True

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            return self._handler(parse_request(line))
        except ProtocolError as exc:
            return error_reply(str(exc))

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
            del client.outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            client.outbox.clear()
            client.closing = True
        if client.closing and not client.outbox:
            self._drop(client)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
        self._selector.modify(client.sock, events, lambda m: self._service(client, m))

    def _drop(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
        with contextlib.suppress(ValueError):
            self._clients.remove(client)

    def close_in_child(self) -> None:
        """In a freshly forked worker: close the inherited sockets without touching the selector.

        The child's epoll fd is the parent's epoll instance; an ``unregister`` here would remove the
        socket from the parent's loop (it did, once: the supervisor stopped answering).
        """
        for client in self._clients:
            client.sock.close()
        self._clients = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def close(self, *, unlink: bool = True) -> None:
        """Stop serving and, by default, remove the socket file (the supervisor at exit)."""
        for client in list(self._clients):
            self._drop(client)
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
            if unlink:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)


def _remove_stale(path: str) -> None:
    """Remove a socket file left by a dead supervisor; refuse when a live one still answers."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(target.stat().st_mode):
        raise ConfigError(f"SUPERVISOR_SOCKET={path!r} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        target.unlink()
        return
    finally:
        probe.close()
    raise ConfigError(f"SUPERVISOR_SOCKET={path!r}: another supervisor is listening there")
