"""Out of file descriptors, a waiting connection must not keep the supervisor's loop awake."""

from __future__ import annotations

import errno
import selectors
import socket
from pathlib import Path

from supervisor.socket_clients import Clients


class _OutOfFds(socket.socket):
    """A real listener whose next accept fails as a process at its fd limit sees it (EMFILE)."""

    fail_next = True

    def accept(self) -> tuple[socket.socket, object]:
        if _OutOfFds.fail_next:
            _OutOfFds.fail_next = False
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_at_the_fd_limit_the_waiting_client_is_refused_and_the_listener_goes_quiet(tmp_path: Path) -> None:
    selector = selectors.DefaultSelector()
    clients = Clients(selector=selector, max_clients=4, service=lambda client, mask: None)
    listener = _OutOfFds(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s.sock"))
    listener.listen()
    clients.serve(listener)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.connect(str(tmp_path / "s.sock"))
    try:
        ready = selector.select(timeout=10)
        assert ready, "the listener is readable"
        for key, mask in ready:
            key.data(mask)
        assert len(clients) == 0
        assert selector.select(timeout=0) == [], "a readable listener would wake the loop for ever"
        peer.settimeout(10)
        assert peer.recv(1) == b"", "the refused client sees its connection closed"
    finally:
        peer.close()
        clients.close()
        selector.close()
