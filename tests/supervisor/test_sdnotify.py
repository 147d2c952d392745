from __future__ import annotations

import socket
from pathlib import Path

from supervisor.sdnotify import Notifier


def test_messages_reach_a_datagram_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(1)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path}, pid=1)
    notifier.ready("2 workers")
    notifier.reloading(123)
    notifier.stopping("bye")
    got = [listener.recv(4096).decode() for _ in range(3)]
    assert got == [
        "READY=1\nSTATUS=2 workers",
        "RELOADING=1\nMONOTONIC_USEC=123\nSTATUS=reloading",
        "STOPPING=1\nSTATUS=bye",
    ]
    notifier.close()
    listener.close()


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"llm-test-{tmp_path.name}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(1)
    Notifier(address="@" + name).status("hi")
    assert listener.recv(100) == b"STATUS=hi"
    listener.close()


def test_watchdog_pings_every_half_interval(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.setblocking(False)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}, pid=1)
    for now in (0.0, 1.0, 1.9, 2.0, 3.0, 4.1):
        notifier.watchdog(now)
    pings = 0
    while True:
        try:
            assert listener.recv(100) == b"WATCHDOG=1"
        except BlockingIOError:
            break
        pings += 1
    assert pings == 3  # at 0, 2.0 and 4.1


def test_watchdog_for_another_pid_is_ignored_and_no_socket_is_a_no_op() -> None:
    assert Notifier.from_environ({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "2"}, pid=1).watchdog_interval == 0
    notifier = Notifier.from_environ({}, pid=1)
    assert not notifier.enabled
    notifier.ready("x")  # nothing happens, nothing raises
