"""The accepted clients of one non-blocking listener in the supervisor's selector loop.

Runs in the supervisor process, shared by the status socket (supervisor/control_socket.py) and the
metrics endpoint (supervisor/metrics_server.py). The supervisor has one thread, so every socket is
non-blocking and each ready fd calls back into its server. This module owns what the two have in
common: accepting (past the cap the oldest client is dropped), receiving, sending, registering the
events a client needs and dropping it; the server owns what a request means and what to answer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

RECV_BYTES = 65536


@dataclass(eq=False)
class Client:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    closing: bool = False  # nothing more is read: the peer hung up or was answered; flush, then drop


Service = Callable[[Client, int], None]


class Clients:
    """A listener and its clients; ``service(client, mask)`` is called when a client's fd is ready."""

    def __init__(self, *, selector: selectors.BaseSelector, max_clients: int, service: Service) -> None:
        self._selector = selector
        self._max_clients = max_clients
        self._service = service
        self._listener: socket.socket | None = None
        self._clients: list[Client] = []
        # One fd held in reserve: out of fds (EMFILE), a pending connection would keep the listener
        # readable and the loop awake for nothing; the reserve lets it be accepted and closed.
        self._spare: int | None = _open_spare()

    def __len__(self) -> int:
        return len(self._clients)

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def serve(self, listener: socket.socket) -> None:
        """Take over a bound, listening socket and accept from the selector loop."""
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, self._accept)

    def _accept(self, mask: int) -> None:
        if self._listener is None:
            return
        try:
            sock, _ = self._listener.accept()
        except OSError as exc:  # EAGAIN, ECONNABORTED, EMFILE: the client is refused, the loop goes on
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._refuse_one()
            return
        sock.setblocking(False)
        if len(self._clients) >= self._max_clients:
            self.drop(self._clients[0])
        client = Client(sock)
        self._clients.append(client)
        self._selector.register(sock, selectors.EVENT_READ, self._callback(client))

    def _refuse_one(self) -> None:
        """Out of fds: give up the reserve to accept the waiting connection and close it at once."""
        assert self._listener is not None
        self._close_spare()
        with contextlib.suppress(OSError):
            self._listener.accept()[0].close()
        self._spare = _open_spare()

    def _callback(self, client: Client) -> Callable[[int], None]:
        return lambda mask: self._service(client, mask)

    def receive(self, client: Client) -> bool:
        """Append what the socket holds to the inbox; False (and ``closing`` set) once the peer is gone."""
        try:
            data = client.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            client.closing = True
            return False
        client.inbox += data
        return True

    def send(self, client: Client) -> None:
        """Send what the socket takes now; on a broken peer forget the rest and mark it ``closing``."""
        try:
            sent = client.sock.send(client.outbox)
            del client.outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # EPIPE, ECONNRESET: nobody reads the rest
            client.outbox.clear()
            client.inbox.clear()
            client.closing = True

    def watch(self, client: Client, events: int) -> None:
        """Register exactly ``events`` (0: none) for the client, so a ready fd never wakes the loop idly."""
        self._selector.modify(client.sock, events, self._callback(client))

    def drop(self, client: Client) -> None:
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
        self._close_spare()

    def close(self) -> None:
        """Drop every client and stop listening (the supervisor at exit)."""
        for client in list(self._clients):
            self.drop(client)
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        self._close_spare()

    def _close_spare(self) -> None:
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
