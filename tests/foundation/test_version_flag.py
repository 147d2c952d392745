"""``--version`` on every command (and every llmctl subcommand) prints the name and version, exit 0."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gigachat_emulator import __version__ as emulator_version
from llm_service import __version__

COMMANDS = [
    (["llm-supervisor"], f"llm-supervisor {__version__}"),
    (["llm-worker"], f"llm-worker {__version__}"),
    (["llm-devstack"], f"llm-devstack {__version__}"),
    (["llm-gigachat-emulator"], f"llm-gigachat-emulator {emulator_version}"),
    (["llmctl"], f"llmctl {__version__}"),
    *(
        ([f"llmctl {sub}"], f"llmctl {__version__}")
        for sub in (
            "status",
            "health",
            "reload",
            "drain",
            "resume",
            "lag",
            "stats",
            "audit",
            "submit",
            "wait",
        )
    ),
]


@pytest.mark.parametrize(("command", "expected"), COMMANDS, ids=[c[0][0] for c in COMMANDS])
def test_version(command: list[str], expected: str) -> None:
    argv = command[0].split()
    program = shutil.which(argv[0])
    assert program is not None, f"{argv[0]} is not installed"
    done = subprocess.run(
        [program, *argv[1:], "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, expected), done.stderr
