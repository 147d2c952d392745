"""The Prometheus endpoint (``METRICS_PORT``), served from the supervisor's selector loop: no threads.

Runs in the supervisor process. prometheus_client's own ``start_http_server`` would start a thread,
and the supervisor forks workers at any moment (a fork with a thread running is unsafe, see
docs/supervisor.md), so this is a minimal HTTP/1.x responder in the style of
:mod:`supervisor.control_socket`: non-blocking sockets, one request per connection, the answer
followed by a close. ``GET /metrics`` (or ``/``) returns the text the ``render`` callback builds at
that moment; anything else gets 404/405. A client that never finishes its request costs a buffer
until MAX_CLIENTS newer ones push it out.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_CLIENTS = 16
MAX_REQUEST = 8192  # request line and headers; a scrape sends a few hundred bytes
Render = Callable[[], tuple[bytes, str]]  # (body, content type)


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    answered: bool = False


class MetricsServer:
    """A TCP listener on ``addr:port`` answering Prometheus scrapes from the main loop."""

    def __init__(self, *, addr: str, port: int, selector: selectors.BaseSelector, render: Render) -> None:
        self.addr = addr
        self.port = port
        self._selector = selector
        self._render = render
        self._listener: socket.socket | None = None
        self._clients: list[_Client] = []

    def open(self) -> None:
        """Bind and listen; OSError (address in use, bad address) goes to the caller."""
        listener = socket.create_server((self.addr, self.port), reuse_port=False)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]  # the real one when METRICS_PORT asked any free port
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, self._accept)

    def _accept(self, mask: int) -> None:
        if self._listener is None:
            return
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        if len(self._clients) >= MAX_CLIENTS:
            self._drop(self._clients[0])
        client = _Client(sock)
        self._clients.append(client)
        self._selector.register(sock, selectors.EVENT_READ, lambda m: self._service(client, m))

    def _service(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_READ and not client.answered:
            self._read(client)
        if client.outbox:
            self._write(client)
        elif client.answered:
            self._drop(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.inbox += data
        if b"\r\n\r\n" in client.inbox or b"\n\n" in client.inbox:
            client.outbox += self._answer(bytes(client.inbox).split(b"\n", 1)[0])
            client.answered = True
        elif len(client.inbox) > MAX_REQUEST:
            client.outbox += _response(431, b"request header too large\n", "text/plain")
            client.answered = True

    def _answer(self, request_line: bytes) -> bytes:
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response(400, b"bad request\n", "text/plain")
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/"):
            return _response(404, b"not found; try /metrics\n", "text/plain")
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", "text/plain")
        try:
            body, content_type = self._render()
        except Exception:  # the door: a bug in building the text must not stop the supervisor's loop
            log.exception("Building the metrics failed")
            return _response(500, b"internal error building the metrics\n", "text/plain")
        return _response(200, body, content_type, head=method == "HEAD")

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
            del client.outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            client.outbox.clear()
        if not client.outbox:
            self._drop(client)
            return
        self._selector.modify(client.sock, selectors.EVENT_WRITE, lambda m: self._service(client, m))

    def _drop(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
        with contextlib.suppress(ValueError):
            self._clients.remove(client)

    def close_in_child(self) -> None:
        """In a freshly forked worker: close the inherited sockets without touching the shared epoll set."""
        for client in self._clients:
            client.sock.close()
        self._clients = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        for client in list(self._clients):
            self._drop(client)
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}


def _response(code: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    reason = _REASONS.get(code, "Internal Server Error")
    header = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return header.encode("latin-1") + (b"" if head else body)
