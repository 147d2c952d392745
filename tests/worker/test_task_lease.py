"""Task leases with real processes: a holder's kill -9 frees the lease; another process waits for it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llm_service.errors import ShutdownRequested
from llm_worker.task_lease import TaskLeases
from tests.waiting import wait_until

HOLDER = """
import sys, time
from pathlib import Path
from llm_worker.task_lease import TaskLeases
lease = TaskLeases(directory=Path(sys.argv[1])).acquire("task-1", time.sleep)
print("held", flush=True)
time.sleep(600)
"""


def _holder(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _give_up(seconds: float) -> None:
    raise ShutdownRequested("stop waiting")


def test_another_process_holding_the_lease_makes_us_wait_and_its_kill_frees_it(tmp_path: Path) -> None:
    leases = TaskLeases(directory=tmp_path / "tasks")
    holder = _holder(tmp_path / "tasks")
    try:
        with pytest.raises(ShutdownRequested):
            leases.acquire("task-1", _give_up)  # busy: the first wait gives up
        leases.acquire("task-2", _give_up).release()  # other task ids are not affected
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        lease = wait_until(lambda: _try(leases), timeout=10, what="the lease after its holder was killed")
        lease.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert list((tmp_path / "tasks").iterdir()) == [], "a released lease leaves no file behind"


def _try(leases: TaskLeases) -> object:
    try:
        return leases.acquire("task-1", _give_up)
    except ShutdownRequested:
        return None
