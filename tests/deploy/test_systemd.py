"""The systemd unit and the logrotate file: checked by the tools that read them, and rotation for real.

``systemd-analyze verify`` needs ExecStart to exist, so the unit is checked with its
``/opt/llm-service/bin/`` prefix pointed at this environment's installed commands; every other line is
checked as shipped. No systemd runs as PID 1 on the test machines: starting the unit is not tested here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.external_tools import require_tool
from tests.supervisor.harness import Supervisor
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "llm-service.service"
LOGROTATE = REPO / "deploy" / "logrotate" / "llm-service"
INSTALL_BIN = "/opt/llm-service/bin/"


def _unit_here(tmp_path: Path) -> Path:
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALL_BIN, f"{Path(sys.executable).parent}/"))
    return unit


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", hint="apt-get install systemd")
    done = subprocess.run(
        [analyze, "verify", str(_unit_here(tmp_path))], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    """systemd's own exposure score (0 best, 10 worst) stays at 2.0 or below ("OK")."""
    analyze = require_tool("systemd-analyze", hint="apt-get install systemd")
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def test_the_unit_has_what_operations_rely_on() -> None:
    settings = dict(re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.MULTILINE))
    assert settings["Type"] == "notify"
    assert settings["ExecReload"] == "/opt/llm-service/bin/llmctl reload"
    assert settings["Restart"] == "on-failure"
    assert settings["RuntimeDirectory"] == "llm-service", (
        "llmctl looks in /run/llm-service/ (llmctl/common.py)"
    )
    assert int(settings["WatchdogSec"]) > 0
    assert settings["User"] == "llm-service"
    # The default drain deadline is WORKER_DRAIN_TIMEOUT 120 s + SUPERVISOR_STOP_MARGIN_S 10 s.
    assert int(settings["TimeoutStopSec"]) > 130


def test_logrotate_file_parses_without_errors(tmp_path: Path) -> None:
    logrotate = require_tool("logrotate", hint="apt-get install logrotate")
    done = subprocess.run(
        [logrotate, "--debug", "--state", str(tmp_path / "state"), str(LOGROTATE)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "error" not in output.lower(), output


@pytest.fixture
def logging_supervisor(lone_supervisor: Callable[..., Supervisor], tmp_path: Path) -> Supervisor:
    (tmp_path / "logs").mkdir()
    return lone_supervisor(LOG_FILE=str(tmp_path / "logs" / "llm-service.log"))


def test_logrotate_rotates_and_the_service_writes_to_the_new_file(
    logging_supervisor: Supervisor, tmp_path: Path
) -> None:
    """The shipped rules on a real LOG_FILE; only the path and the signal's target differ."""
    logrotate = require_tool("logrotate", hint="apt-get install logrotate")
    logs = tmp_path / "logs"
    config = tmp_path / "logrotate.conf"
    shipped = LOGROTATE.read_text()
    assert "/var/log/llm-service/*.log" in shipped and "systemctl kill" in shipped
    config.write_text(
        re.sub(
            r"^\s*systemctl kill .*$",
            f"        kill -USR1 {logging_supervisor.proc.pid}",
            shipped.replace("/var/log/llm-service/", f"{logs}/"),
            flags=re.MULTILINE,
        )
    )
    current = logs / "llm-service.log"
    wait_until(
        lambda: "Supervisor ready" in current.read_text(), timeout=30, what="the ready line in LOG_FILE"
    )
    done = subprocess.run(
        [logrotate, "--force", "--state", str(tmp_path / "state"), str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rotated = [p for p in logs.iterdir() if p.name.startswith("llm-service.log-")]
    assert len(rotated) == 1 and "Supervisor ready" in rotated[0].read_text()
    wait_until(
        lambda: current.exists() and "Log files reopened (SIGUSR1)" in current.read_text(),
        timeout=30,
        what="the reopen line in the new LOG_FILE",
    )
    assert "Supervisor ready" not in current.read_text()
