"""The Prometheus endpoint (``METRICS_PORT``), served from the supervisor's selector loop: no threads.

Runs in the supervisor process. prometheus_client's own ``start_http_server`` would start a thread,
and the supervisor forks workers at any moment (a fork with a thread running is unsafe, see
docs/supervisor.md), so this is a minimal HTTP/1.x responder on the client handling it shares with
the status socket (supervisor/socket_clients.py): non-blocking sockets, one request per connection,
the answer followed by a close. ``GET /metrics`` (or ``/``) returns the text the ``render`` callback builds at
that moment; anything else gets 404/405. A client that never finishes its request costs a buffer
until MAX_CLIENTS newer ones push it out.
"""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Callable

from supervisor.socket_clients import Client, Clients

log = logging.getLogger(__name__)

MAX_CLIENTS = 16
MAX_REQUEST = 8192  # request line and headers; a scrape sends a few hundred bytes
Render = Callable[[], tuple[bytes, str]]  # (body, content type)


class MetricsServer:
    """A TCP listener on ``addr:port`` answering Prometheus scrapes from the main loop."""

    def __init__(self, *, addr: str, port: int, selector: selectors.BaseSelector, render: Render) -> None:
        self.addr = addr
        self.port = port
        self._render = render
        self._clients = Clients(selector=selector, max_clients=MAX_CLIENTS, service=self._service)

    def open(self) -> None:
        """Bind and listen; OSError (address in use, bad address) goes to the caller."""
        listener = socket.create_server((self.addr, self.port), reuse_port=False)
        self.port = listener.getsockname()[1]  # the real one when METRICS_PORT asked any free port
        self._clients.serve(listener)

    def _service(self, client: Client, mask: int) -> None:
        # ``closing`` here: answered, so nothing more is read; the client goes once the answer is out.
        if mask & selectors.EVENT_READ and not client.closing:
            self._read(client)
        if client.outbox:
            self._write(client)
        elif client.closing:
            self._clients.drop(client)

    def _read(self, client: Client) -> None:
        if not self._clients.receive(client):
            return  # hung up before its request was complete: dropped by _service
        if b"\r\n\r\n" in client.inbox or b"\n\n" in client.inbox:
            client.outbox += self._answer(bytes(client.inbox).split(b"\n", 1)[0])
            client.closing = True
        elif len(client.inbox) > MAX_REQUEST:
            client.outbox += _response(431, b"request header too large\n", "text/plain")
            client.closing = True

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

    def _write(self, client: Client) -> None:
        self._clients.send(client)
        if not client.outbox:
            self._clients.drop(client)
            return
        self._clients.watch(client, selectors.EVENT_WRITE)

    def close_in_child(self) -> None:
        """In a freshly forked worker: close the inherited sockets (supervisor/socket_clients.py)."""
        self._clients.close_in_child()

    def close(self) -> None:
        self._clients.close()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}


def _response(code: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    reason = _REASONS.get(code, "Internal Server Error")
    header = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return header.encode("latin-1") + (b"" if head else body)
