"""``llmctl`` is a client: importing it loads nothing of the supervisor, and not psutil.

An operator's shell or Docker's HEALTHCHECK runs ``llmctl health`` every few seconds; it should load
what a client needs and no server code. The socket protocol and the health exit codes it shares with
the supervisor live in llm_service/socket_protocol.py. Checked in a fresh interpreter, since this test
process has imported the supervisor long before.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, pkgutil, sys, importlib
import llmctl
from llmctl.cli import build_parser
# __main__ would run the command line; it imports llmctl.cli only.
names = sorted(m.name for m in pkgutil.iter_modules(llmctl.__path__, "llmctl."))
names = [n for n in names if n != "llmctl.__main__"]
for name in names:
    importlib.import_module(name)
build_parser()
print(json.dumps({"llmctl": names, "loaded": sorted(sys.modules)}))
"""


def _loaded_by_llmctl() -> tuple[list[str], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    found = json.loads(done.stdout.splitlines()[-1])
    return found["llmctl"], found["loaded"]


def test_importing_every_llmctl_module_loads_no_supervisor_module_and_no_psutil() -> None:
    modules, loaded = _loaded_by_llmctl()
    assert {"llmctl.control", "llmctl.cli", "llmctl.submit"} <= set(modules)  # the probe saw the package
    assert "llm_service.socket_protocol" in loaded  # the shared protocol took the supervisor's place
    server_side = [m for m in loaded if m == "supervisor" or m.startswith(("supervisor.", "psutil"))]
    assert server_side == []
    worker_side = [m for m in loaded if m == "llm_worker" or m.startswith("llm_worker.")]
    assert worker_side == []
