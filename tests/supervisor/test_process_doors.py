"""The supervisor's doors against a real ``llm-supervisor`` with real workers on the private stack.

Issue 7 item 4: hostile status-socket input, hostile ``.env`` files on SIGHUP, and a thousand clients
that connect and go. Each test ends by checking that ``llmctl status`` (the installed console script)
still answers and that no worker was restarted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.supervisor.conftest import StartSupervisor
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until
from tests.worker.harness import Names, worker_env

pytestmark = pytest.mark.stack

REPLY_TIMEOUT_S = 30.0


def workers_of(sup: Supervisor) -> dict[int, tuple[int, int]]:
    """slot -> (pid, restarts) of the running pool."""
    return {w["slot"]: (w["pid"], w["restarts"]) for w in sup.workers()}


def llmctl_status(sup: Supervisor) -> dict[str, Any]:
    done = subprocess.run(
        [shutil.which("llmctl") or "llmctl", "status", "--json", "--socket", sup.socket],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"llmctl status failed ({done.returncode}): {done.stderr}"
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


def exchange(path: str, payload: bytes) -> list[bytes]:
    """Send ``payload``, half-close, and read every reply line until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.connect(path)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may cut off a client that sent too much: what it answered still counts
        lines: list[bytes] = []
        replies = sock.makefile("rb")
        # A client cut off with unread input gets ECONNRESET after the replies sent before the close.
        with contextlib.suppress(ConnectionResetError):
            lines.extend(iter(replies.readline, b""))
        return lines


def assert_error_replies(lines: list[bytes], what: str) -> None:
    assert lines, f"{what}: no reply at all"
    for line in lines:
        reply = json.loads(line)
        assert reply["ok"] is False and reply["error"], f"{what}: {reply}"


HOSTILE = {
    "deep JSON": b"[" * 200_000 + b"\n",
    "huge integer": b'{"cmd": "scale", "n": ' + b"9" * 10_000 + b"}\n",
    "huge float": b'{"cmd": "scale", "n": 1e999}\n',
    "scale beyond the table": b'{"cmd": "scale", "n": ' + b"9" * 300 + b"}\n",
    "NaN": b'{"cmd": "scale", "n": NaN}\n',
    "invalid UTF-8": b'{"cmd": "st\xff\xfeatus"}\n',
    "NUL bytes": b"\x00" * 5000 + b"\n",
    "64 KiB without a newline": b"x" * (64 * 1024 + 10),
}


def test_socket_abuse_gets_error_replies_and_the_supervisor_keeps_serving(
    start_real: StartSupervisor,
) -> None:
    sup = start_real()
    sup.running(2, timeout=60)
    before = workers_of(sup)

    for what, payload in HOSTILE.items():
        assert_error_replies(exchange(sup.socket, payload), what)
        assert sup.status() is not None, f"no status after {what}"
    garbage = exchange(sup.socket, os.urandom(64 * 1024))
    assert all(json.loads(line)["ok"] is False for line in garbage)

    pipelined = b"".join(
        b'{"cmd": "status"}\n' if i % 3 == 0 else b'{"cmd": "health"}\n' for i in range(3000)
    )
    replies = exchange(sup.socket, pipelined)
    assert len(replies) == 3000 and all(json.loads(r)["ok"] is not False for r in replies)

    greedy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    greedy.connect(sup.socket)
    greedy.setblocking(False)
    sent = 0
    try:
        while sent < 50_000_000:  # until its socket buffer and the server's backlog are full
            sent += greedy.send(b'{"cmd": "status"}\n' * 256)
    except BlockingIOError:
        pass
    served = llmctl_status(sup)  # while the greedy client reads nothing
    assert served["health"] in ("ok", "degraded") and len(served["workers"]) == 2
    greedy.close()

    assert llmctl_status(sup)["workers"]
    assert workers_of(sup) == before, "a worker was restarted"
    assert "Traceback" not in sup.log_text()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def one_client(path: str, i: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.connect(path)
        if i % 4 == 0:
            return  # connect and go
        sock.sendall(b'{"cmd": "health"}\n')
        if i % 4 == 1:
            return  # ask and go without reading
        sock.makefile("rb").readline()  # ask, read, go (llmctl, Docker's HEALTHCHECK)


def test_a_thousand_clients_leave_no_fd_and_the_supervisor_sleeps(start_real: StartSupervisor) -> None:
    sup = start_real()
    sup.running(2, timeout=60)
    before = workers_of(sup)
    pid = sup.proc.pid
    baseline = fd_count(pid)

    for i in range(1000):
        one_client(sup.socket, i)
    llmctl_status(sup)  # every earlier client has been handled: the loop serves in order of events

    wait_until(lambda: fd_count(pid) <= baseline, timeout=30, what=f"fd count back to {baseline}")
    proc = psutil.Process(pid)
    cpu_before, wall_before = sum(proc.cpu_times()[:2]), time.monotonic()
    time.sleep(10)  # a measurement window, not a wait for a state: the loop must sleep through it
    cpu_used, wall = sum(proc.cpu_times()[:2]) - cpu_before, time.monotonic() - wall_before
    # The leak made the loop spin at 70-80 % of a core. The issue's bound (issue 9 item 1): under 1 % of
    # one core. An idle supervisor with two real workers wakes every SAMPLE_S for its sample and
    # otherwise sleeps (bench/supervisor_cpu.py measures it, see docs/supervisor.md).
    assert cpu_used < 0.01 * wall, f"supervisor used {cpu_used:.2f} s CPU in {wall:.1f} s: over 1 % of a core"
    assert fd_count(pid) <= baseline
    assert workers_of(sup) == before


# --- reload ------------------------------------------------------------------------------------------

IN_FILE = ("KAFKA_GROUP_ID", "KAFKA_TASKS_TOPIC", "LOG_FILE", "WORKER_PROCESSES")


@pytest.fixture
def from_env_file(
    service_env: dict[str, str], names: Names, tmp_path: Path
) -> Iterator[tuple[Supervisor, Path, dict[str, str]]]:
    """A real supervisor whose group, topic, LOG_FILE and pool size come from an .env file (the environment
    would win over the file, so they are taken out of it)."""
    env = worker_env(
        service_env,
        names,
        tmp_path,
        WORKER_PROCESSES="2",
        WORKER_MAX_CONCURRENT_TASKS="2",
        WORKER_HEARTBEAT_TIMEOUT="30",
        SUPERVISOR_STOP_MARGIN_S="5",
        LIMIT_DISK_FREE_MB="1",
    )
    base = {name: env.pop(name, "") for name in IN_FILE}
    base["LOG_FILE"] = str(tmp_path / "supervisor-file.log")
    env_file = tmp_path / "service.env"
    env_file.write_text(render(base))
    sup = Supervisor(env=env, tmp_path=tmp_path, fake=False, env_file=env_file, name="doors")
    yield sup, env_file, base
    sup.stop(timeout=60)


def render(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


BAD_ENV_FILES: list[tuple[str, dict[str, str], bytes, str]] = [
    ("undecodable byte", {}, b"GIGACHAT_MODEL=Giga\xffChat\n", "is not UTF-8"),
    ("LOG_FILE in a missing folder", {"LOG_FILE": "/nonexistent-folder/x.log"}, b"", "does not exist"),
    ("inf", {"GIGACHAT_TIMEOUT_S": "inf"}, b"", "GIGACHAT_TIMEOUT_S='inf': must be a finite number"),
    ("nan", {"TASK_TIMEOUT_S": "nan"}, b"", "TASK_TIMEOUT_S='nan': must be a finite number"),
    ("huge integer", {"WORKER_PROCESSES": "9" * 5000}, b"", "must be a whole number"),
    # Valid on paper, fails when applied: /proc/self is a folder, but nobody creates files there.
    ("LOG_FILE that cannot be opened", {"LOG_FILE": "/proc/self/x.log"}, b"", "cannot open"),
    (
        "more workers than the table",
        {"WORKER_PROCESSES": "40", "WORKER_MAX_PROCESSES": "64"},
        b"",
        "exceeds WORKER_MAX_PROCESSES=32",
    ),
    ("a new group", {"KAFKA_GROUP_ID": "another-group"}, b"", "KAFKA_GROUP_ID cannot change on reload"),
    ("a new topic", {"KAFKA_TASKS_TOPIC": "another-topic"}, b"", "KAFKA_TASKS_TOPIC cannot change on reload"),
]

REJECTED = "Reload (SIGHUP) rejected, keeping the old config: "


def test_every_bad_env_file_is_rejected_with_one_line_and_the_old_config_kept(
    from_env_file: tuple[Supervisor, Path, dict[str, str]],
) -> None:
    sup, env_file, base = from_env_file
    sup.running(2, timeout=60)
    before = workers_of(sup)
    config = sup.ask("status")["config"]
    file_log = Path(base["LOG_FILE"])

    for count, (what, changes, extra, reason) in enumerate(BAD_ENV_FILES, start=1):
        env_file.write_bytes(render({**base, **changes}).encode() + extra)
        sup.signal(signal.SIGHUP)
        wait_until(
            functools.partial(rejected_times, sup, count), timeout=30, what=f"reload with {what} rejected"
        )
        line = _last_line_with(sup.log_text(), REJECTED)
        assert reason in line, f"{what}: {line}"
        assert _last_line_with(file_log.read_text(), REJECTED) == line, f"{what}: LOG_FILE stopped"
        assert llmctl_status(sup)["config"] == config, f"{what}: config changed"

    env_file.write_text(render({**base, "ALERT_CPU_PERCENT": "95"}))  # a good reload still works
    sup.signal(signal.SIGHUP)
    accepted = "Reload (SIGHUP) accepted: ALERT_CPU_PERCENT"
    wait_until(lambda: accepted in file_log.read_text(), timeout=30, what="the good reload in LOG_FILE")
    assert llmctl_status(sup)["config"]["ALERT_CPU_PERCENT"] == 95
    assert workers_of(sup) == before, "a worker was restarted"
    text = sup.log_text()
    assert text.count(REJECTED) == len(BAD_ENV_FILES)
    assert "Traceback" not in text


def rejected_times(sup: Supervisor, n: int) -> bool:
    return sup.log_text().count(REJECTED) == n


def _last_line_with(text: str, needle: str) -> str:
    return [line for line in text.splitlines() if needle in line][-1]
