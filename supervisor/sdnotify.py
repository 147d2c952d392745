"""systemd's notify protocol: one datagram per message to ``$NOTIFY_SOCKET``.

Runs in the supervisor process (workers have NOTIFY_SOCKET removed after fork). Without
NOTIFY_SOCKET every call is a no-op, so the same code runs under Docker and by hand. An address
starting with ``@`` is a Linux abstract socket. Sends never block and never raise: systemd being
away must not stop the service.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """READY=1, RELOADING=1, STOPPING=1, STATUS=... and WATCHDOG=1 pings."""

    def __init__(self, *, address: str | None, watchdog_usec: int = 0) -> None:
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self._sock: socket.socket | None = None
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec > 0 else 0.0
        self._next_ping = 0.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, pid: int) -> Notifier:
        """NOTIFY_SOCKET and WATCHDOG_USEC (the latter only when WATCHDOG_PID is unset or ours)."""
        watchdog = 0
        if environ.get("WATCHDOG_PID", str(pid)) == str(pid):
            try:
                watchdog = int(environ.get("WATCHDOG_USEC", "0"))
            except ValueError:
                watchdog = 0
        return cls(address=environ.get("NOTIFY_SOCKET") or None, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> None:
        if self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.debug("systemd notify to %r failed: %s", self._address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self, monotonic_usec: int) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self, now: float) -> None:
        """Ping every WATCHDOG_USEC/2 when systemd asked for it; call from every loop turn."""
        if self.watchdog_interval and now >= self._next_ping:
            self.send("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval

    def next_due(self) -> float | None:
        return self._next_ping if self.watchdog_interval else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants it next to RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
