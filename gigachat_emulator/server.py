"""HTTP transport: a threading HTTP/1.1 server that reads ``Request``s and writes ``Response``s.

One thread per connection (``ThreadingHTTPServer``, daemon threads), keep-alive with exact Content-Length,
chunked transfer encoding for SSE. Latency sleeps happen in the connection's own thread without any lock,
so hundreds of slow calls overlap.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import parse_qsl, urlsplit

from gigachat_emulator import __version__
from gigachat_emulator.app import Emulator
from gigachat_emulator.errors import ApiError
from gigachat_emulator.wire import Request, Response, api_error_response

logger = logging.getLogger(__name__)

STATUS_CLIENT_GONE = 499
STATUS_RESET = 0
_MAX_HEADERS = 100
_MAX_LINE = 65536


class EmulatorHTTPServer(ThreadingHTTPServer):
    """The listening server; ``app`` holds all emulator state (handlers reach it via ``self.server``)."""

    daemon_threads = True
    # 256+ clients may connect at once (bench); the default backlog of 5 would make them retry SYNs.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: Emulator) -> None:
        self.app = app
        super().__init__(address, RequestHandler)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server_address[1])


class RequestHandler(BaseHTTPRequestHandler):
    """Reads one request at a time from a keep-alive connection and hands it to the ``Emulator``."""

    protocol_version = "HTTP/1.1"
    server_version = f"gigachat-emulator/{__version__}"
    # Header and body leave in one send: a small second write would wait for the peer's delayed ACK
    # (Nagle), adding ~40 ms to every call.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    _received_at = 0.0
    raw_requestline: bytes  # set by the stdlib's handle_one_request; missing from typeshed

    def parse_request(self) -> bool:
        """Parse the request line and headers; stamp the arrival time first.

        Replaces the stdlib version, which runs every header block through ``email.feedparser``: under a
        burst of 256 calls that parsing dominated the time each call waited for the GIL before its
        latency clock could start. Only HTTP/1.0 and HTTP/1.1 are accepted.
        """
        self._received_at = time.monotonic()
        self.command = ""
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = self._read_headers()
        if headers is None:
            self.send_error(431, "Request header fields too large or malformed")
            return False
        self.headers = headers
        connection = (headers.get("Connection") or "").lower()
        self.close_connection = connection == "close" or (
            words[2] == "HTTP/1.0" and connection != "keep-alive"
        )
        if (headers.get("Expect") or "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def _read_headers(self) -> HTTPMessage | None:
        """Read header lines up to the blank line; ``None`` when too many, too long or malformed."""
        headers = HTTPMessage()
        for _ in range(_MAX_HEADERS):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                return None
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name.strip():
                return None
            headers[name.strip()] = value.strip()
        return None

    def version_string(self) -> str:
        """The ``Server`` header (the stdlib would append the Python version)."""
        return self.server_version

    def do_GET(self) -> None:
        """Serve GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve POST."""
        self._serve()

    def do_PUT(self) -> None:
        """Serve PUT (answered 405 by the router)."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve DELETE (answered 405 by the router)."""
        self._serve()

    @property
    def _app(self) -> Emulator:
        return cast(EmulatorHTTPServer, self.server).app

    def _serve(self) -> None:
        started = self._received_at
        request = self._read_request()
        if request is None:
            return
        app = self._app
        finished = False

        def finish(status: int) -> None:
            nonlocal finished
            if not finished:
                finished = True
                app.finish(request, status, time.monotonic() - started)

        try:
            status = self._write(app.dispatch(request), finish)
            if status == STATUS_CLIENT_GONE:
                app.amend(request, status)
        finally:
            finish(STATUS_CLIENT_GONE)

    def _read_request(self) -> Request | None:
        """Read the body; answer 411/413/400 directly (and close) when it cannot be read safely."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._refuse(ApiError(411, "Length Required"))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._refuse(ApiError(400, "Invalid Content-Length"))
            return None
        if length < 0 or length > self._app.state.options.max_body_bytes:
            self._refuse(ApiError(413, "Payload too large"))
            return None
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        return Request(
            method=self.command,
            path=url.path.rstrip("/") or "/",
            query=dict(parse_qsl(url.query)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client_gone=self._client_gone,
            received_at=self._received_at,
        )

    def _refuse(self, error: ApiError) -> None:
        # The unread body would be parsed as the next request, so this connection cannot be kept.
        self.close_connection = True
        response = api_error_response(error)
        response.headers["Connection"] = "close"
        self._write(response, lambda status: None)

    def _write(self, response: Response, finish: Callable[[int], None]) -> int:
        """Write the answer, calling ``finish`` with the status just before the last bytes go out.

        Returns the status the client got: 499 if it went away, 0 for a reset.
        """
        if response.reset:
            finish(STATUS_RESET)
            self._reset_connection()
            return STATUS_RESET
        try:
            if response.stream is not None:
                return self._write_stream(response, response.stream, finish)
            finish(response.status)
            self._write_head(response, {"Content-Length": str(len(response.body))})
            self.wfile.write(response.body)
            self.wfile.flush()
        except ConnectionError:
            self.close_connection = True
            return STATUS_CLIENT_GONE
        return response.status

    def _write_head(self, response: Response, extra: dict[str, str]) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in {**response.headers, **extra}.items():
            self.send_header(name, value)
        self.end_headers()

    def _write_stream(
        self, response: Response, stream: Iterable[tuple[float, bytes]], finish: Callable[[int], None]
    ) -> int:
        """Send an SSE body with chunked encoding, pausing before each piece as the stream asks."""
        self._write_head(response, {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"})
        self.wfile.flush()
        sleeper = self._app.state.sleeper
        pieces = iter(stream)
        current = next(pieces, None)
        while current is not None:
            following = next(pieces, None)  # look ahead: the log entry must exist before the last piece
            delay, data = current
            if not sleeper.sleep(delay):
                self.close_connection = True
                return STATUS_CLIENT_GONE
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if following is None:
                finish(response.status)
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            current = following
        return response.status

    def _reset_connection(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client sees
        # "connection reset by peer", like a crashed gateway. The socket really closes when
        # rfile/wfile are closed in finish(), before the server's own shutdown(SHUT_WR).
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _client_gone(self) -> bool:
        """Whether the peer closed the connection (readable with zero bytes pending)."""
        poller = select.poll()  # poll, not select: descriptors may exceed FD_SETSIZE under load
        poller.register(self.connection, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(0):
            return False
        try:
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return peeked == b""

    def log_message(self, format: str, *args: object) -> None:
        """Route the stdlib's per-request lines to debug logging instead of stderr."""
        logger.debug("%s " + format, self.address_string(), *args)
