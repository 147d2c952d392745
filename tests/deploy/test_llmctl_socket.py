"""``llmctl`` on a systemd host finds the service's socket without flags.

The unit's supervisor listens under its RuntimeDirectory (/run/llm-service/); an operator's shell has no
RUNTIME_DIRECTORY, so llmctl tries that socket before the /tmp default. Proven against a real
supervisor (fake workers) whose socket stands in for /run/llm-service/llm-supervisor.sock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import llmctl.common
from llmctl.cli import main as llmctl_main
from llmctl.common import TMP_DEFAULT_SOCKET, discover_socket
from tests.supervisor.harness import Supervisor


@pytest.fixture
def supervisor(lone_supervisor: Callable[..., Supervisor]) -> Supervisor:
    return lone_supervisor()


@pytest.fixture
def operator_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SUPERVISOR_SOCKET, no RUNTIME_DIRECTORY, no ./.env: what an operator's login shell has."""
    for name in ("SUPERVISOR_SOCKET", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "operator"
    home.mkdir()
    monkeypatch.chdir(home)


@pytest.mark.usefixtures("operator_shell")
def test_llmctl_uses_the_systemd_socket_before_the_tmp_default(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(llmctl.common, "SYSTEMD_SOCKET", Path(supervisor.socket))
    assert llmctl_main(["health"]) == 0
    assert capsys.readouterr().out.startswith("ok")


@pytest.mark.usefixtures("operator_shell")
def test_without_a_systemd_socket_llmctl_looks_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(llmctl.common, "SYSTEMD_SOCKET", tmp_path / "absent" / "llm-supervisor.sock")
    if Path(TMP_DEFAULT_SOCKET).exists():
        pytest.skip(f"{TMP_DEFAULT_SOCKET} exists on this machine: a supervisor may be listening there")
    assert llmctl_main(["health"]) == 2
    assert TMP_DEFAULT_SOCKET in capsys.readouterr().err


def test_an_explicit_socket_wins_over_the_systemd_one(supervisor: Supervisor, tmp_path: Path) -> None:
    explicit = str(tmp_path / "elsewhere.sock")
    assert discover_socket(explicit, systemd_socket=Path(supervisor.socket)) == explicit
    assert discover_socket(TMP_DEFAULT_SOCKET, systemd_socket=Path(supervisor.socket)) == supervisor.socket


def test_a_plain_file_at_the_systemd_path_is_not_taken_for_a_socket(tmp_path: Path) -> None:
    stray = tmp_path / "llm-supervisor.sock"
    stray.write_text("")
    assert discover_socket(TMP_DEFAULT_SOCKET, systemd_socket=stray) == TMP_DEFAULT_SOCKET
