"""The lag probe's life in the supervisor: a probe that overruns is killed once, and the loop is not
woken again for it until its exit is reaped (a real child process)."""

from __future__ import annotations

import os
import selectors
import signal
import sys
from pathlib import Path

import psutil
import pytest

from llm_service.config import Settings
from supervisor.lag import LagMonitor
from tests.waiting import wait_until


def test_an_overrun_probe_is_killed_once_and_is_not_due_again_until_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hanging = tmp_path / "hanging-probe"
    hanging.write_text("#!/bin/sh\nexec sleep 600\n")
    hanging.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hanging))  # the probe is started as `python -m ...`
    settings = Settings(supervisor_lag_interval_s=1.0)
    lag = LagMonitor(selector=selectors.DefaultSelector(), timeout_s=2.0)

    before = set(psutil.Process().children())
    lag.tick(settings, now=100.0)  # starts the probe
    [probe] = set(psutil.Process().children()) - before
    assert lag.next_due(settings) == 102.0  # its overrun deadline
    lag.tick(settings, now=103.0)  # overran: SIGKILL

    assert lag.next_due(settings) is None, "a killed probe must not keep the loop awake"
    pid, status = wait_until(lambda: _reaped(probe.pid), timeout=60, what="the killed probe's exit")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    lag.on_exit(pid, status)
    assert lag.next_due(settings) == 101.0  # the next probe is due again


def _reaped(child: int) -> tuple[int, int] | None:
    """Reap only the probe (waitpid(-1) would take the test session's own children too)."""
    pid, status = os.waitpid(child, os.WNOHANG)
    return (pid, status) if pid else None
