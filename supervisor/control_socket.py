"""The status socket server, served from the supervisor's own selector loop: non-blocking, no threads.

Runs in the supervisor process. Each registered file object carries a callback as its selector
data; the main loop calls it when the fd is ready. A slow or silent client costs a buffer, never a
wait, and one client cannot starve the others:

* reads and writes are non-blocking; a request line is capped at MAX_LINE;
* one wake-up answers at most BATCH lines; pipelined lines beyond that wait for the next wake-up;
* while a client's unsent replies exceed MAX_OUTBOX, nothing more is read from it (it must read);
* clients are capped at MAX_CLIENTS (the oldest is dropped);
* a client that hung up is unregistered and closed at once. Once it was not (its outbox was empty, so
  nothing ever closed it): its fd stayed in epoll with EPOLLHUP and the loop spun at 70-80 % of a core.

Every line ends in a reply: the handler's, or one JSON error (bad input, or a bug, logged with its
traceback); nothing a client sends leaves this module as an exception.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_service.errors import ConfigError
from llm_service.socket_protocol import (
    MAX_LINE,
    ProtocolError,
    Request,
    encode_reply,
    error_reply,
    parse_request,
)
from supervisor.socket_clients import Client, Clients

log = logging.getLogger(__name__)

MAX_CLIENTS = 32
BATCH = 16  # request lines answered per wake-up of one client: the others get their turn
MAX_OUTBOX = 256 * 1024  # unsent reply bytes above which a client's further requests wait
Handler = Callable[[Request], dict[str, Any]]


def _has_line(client: Client) -> bool:
    return b"\n" in client.inbox


def _backlogged(client: Client) -> bool:
    """Work is queued here already: answer it before reading more from the socket."""
    return len(client.outbox) > MAX_OUTBOX or _has_line(client)


class ControlServer:
    """A Unix stream socket at ``path`` (mode 0660) answering one JSON line with one JSON line."""

    def __init__(self, *, path: str, selector: selectors.BaseSelector, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._clients = Clients(selector=selector, max_clients=MAX_CLIENTS, service=self._service)

    @property
    def client_count(self) -> int:
        return len(self._clients)

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
        self._clients.serve(listener)

    def _service(self, client: Client, mask: int) -> None:
        """The client's selector callback: the door. A bug here drops this client, never the loop."""
        try:
            self._step(client, mask)
        except Exception:
            log.exception("Status socket client dropped after an unexpected error")
            self._clients.drop(client)

    def _step(self, client: Client, mask: int) -> None:
        if mask & selectors.EVENT_READ and not client.closing and not _backlogged(client):
            self._read(client)
        self._answer_batch(client)
        if client.outbox:
            self._clients.send(client)
        self._rearm(client)

    def _read(self, client: Client) -> None:
        if not self._clients.receive(client):
            return  # hung up: answer what is queued, then drop (see _rearm)
        if len(client.inbox) > MAX_LINE and not _has_line(client):
            client.outbox += encode_reply(error_reply(f"request longer than {MAX_LINE} bytes"))
            client.inbox.clear()
            client.closing = True

    def _answer_batch(self, client: Client) -> None:
        for _ in range(BATCH):
            if len(client.outbox) > MAX_OUTBOX or not _has_line(client):
                return
            line, _, rest = bytes(client.inbox).partition(b"\n")
            client.inbox = bytearray(rest)
            if len(line) > MAX_LINE:
                client.outbox += encode_reply(error_reply(f"request longer than {MAX_LINE} bytes"))
                continue
            client.outbox += self._answer(line)

    def _answer(self, line: bytes) -> bytes:
        try:
            return encode_reply(self._handler(parse_request(line)))
        except ProtocolError as exc:
            return encode_reply(error_reply(str(exc)))
        except Exception as exc:
            log.exception("Status socket request failed: %.200r", line)
            return encode_reply(error_reply(f"internal error: {type(exc).__name__}"))

    def _rearm(self, client: Client) -> None:
        """Register exactly the events this client needs now; drop it once it has nothing left.

        Interest in EVENT_READ is withdrawn while the client is backlogged or has hung up, so a
        readable (or hung-up) fd never wakes the loop with nothing to do.
        """
        pending = bool(client.outbox) or _has_line(client)
        if client.closing and not pending:
            self._clients.drop(client)
            return
        events = 0 if client.closing or _backlogged(client) else selectors.EVENT_READ
        if pending:
            events |= selectors.EVENT_WRITE  # also the wake-up for lines left after a batch
        self._clients.watch(client, events)

    def close_in_child(self) -> None:
        """In a freshly forked worker: close the inherited sockets (supervisor/socket_clients.py)."""
        self._clients.close_in_child()

    def close(self, *, unlink: bool = True) -> None:
        """Stop serving and, by default, remove the socket file (the supervisor at exit)."""
        listening = self._clients.listening
        self._clients.close()
        if listening and unlink:
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
