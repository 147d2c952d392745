"""Outside programs some tests drive (podman, promtool, systemd-analyze, hadolint).

A developer's machine may lack them: the test is then skipped with the reason printed, so `make test`
still runs everywhere. CI installs every one of them and sets ``LLM_SERVICE_REQUIRE_TOOLS=1``
(`.ci/run`), which turns a missing tool into a failure: there, nothing is skipped.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, *, hint: str) -> str:
    """The absolute path of ``name`` on PATH; skip (or fail under CI) with ``hint`` when it is absent."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed ({hint})"
    if os.environ.get("LLM_SERVICE_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason}; LLM_SERVICE_REQUIRE_TOOLS=1 requires it", pytrace=False)
    pytest.skip(reason)
