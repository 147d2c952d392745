"""The one worker set-up (llm_service/worker_setup.py) and the one list of signals (llm_service/signals.py).

Checked in real processes: a fresh interpreter installs the supervisor's signal handlers, forks a
worker through the production ForkProcessOps, and the worker reports its signal dispositions before
and after run_worker's handlers go in; the same for a foreground ``llm-worker``, without a fork.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from llm_service.signals import (
    IGNORED_UNDER_SUPERVISOR,
    IGNORED_UNTIL_HANDLED,
    RESET_IN_WORKER,
    SUPERVISOR_HANDLED,
    WORKER_HANDLED,
    WORKER_IGNORED,
)

_COMMON = """
import json, os, random, signal, sys
from llm_service.config import Settings
from llm_worker.process import Signals

NAMES = ("SIGCHLD", "SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT", "SIGTTIN", "SIGTTOU", "SIGUSR1", "SIGPIPE")

def dispositions():
    seen = {}
    for name in NAMES:
        handler = signal.getsignal(getattr(signal, name))
        seen[name] = {signal.SIG_DFL: "default", signal.SIG_IGN: "ignore"}.get(handler, "handler")
    return seen

def caught_by_c_code(sig):
    # faulthandler installs its handler below Python's signal module: only the kernel's mask shows it.
    for line in open("/proc/self/status"):
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)

def report(out, **extra):
    before = dispositions()
    Signals().install()
    found = {"before": before, "after": dispositions(), "dump": caught_by_c_code(signal.SIGUSR2)}
    with open(out, "w") as f:
        json.dump({**found, **extra}, f)
"""

_FORKED = """
from llm_service.status_table import StatusTable
from supervisor.signals import SignalNotes
from supervisor.spawn import ForkProcessOps, SpawnRequest

out = sys.argv[1]
os.environ["NOTIFY_SOCKET"] = "/run/systemd/notify"  # the supervisor's, never a worker's

def entry(*, settings, slot, progress, worker_id, group_instance_id):
    report(out, notify=os.environ.get("NOTIFY_SOCKET"), draw=random.random())
    return 0

notes = SignalNotes()
notes.install()
table = StatusTable.create(1)
random.seed(7)
ops = ForkProcessOps(table=table, entry=entry)
request = SpawnRequest(slot=0, settings=Settings(), hostname="test", group_instance_id="test-0")
pid = ops.spawn(request, in_child=notes.close)
_, status = os.waitpid(pid, 0)
random.seed(7)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "parent_draw": random.random()}))
"""

_FOREGROUND = """
from llm_service.worker_setup import prepare_worker_process

prepare_worker_process(settings=Settings(), slot=0, supervised=False)
report(sys.argv[1])
print(json.dumps({"code": 0}))
"""


def _probe(script: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path / "child.json"
    done = subprocess.run(
        [sys.executable, "-c", _COMMON + script, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parent = json.loads(done.stdout.splitlines()[-1])
    assert parent["code"] == 0, done.stderr
    return parent, json.loads(out.read_text())


def test_the_lists_cover_every_signal_the_supervisor_handles_once() -> None:
    ignored = (*WORKER_IGNORED, *IGNORED_UNDER_SUPERVISOR, *IGNORED_UNTIL_HANDLED)
    for sig in SUPERVISOR_HANDLED:
        assert (sig in RESET_IN_WORKER) != (sig in ignored), sig.name
    assert set(IGNORED_UNDER_SUPERVISOR) | set(IGNORED_UNTIL_HANDLED) <= set(WORKER_HANDLED)
    assert not set(WORKER_IGNORED) & set(WORKER_HANDLED)


def test_a_forked_worker_drops_the_supervisors_handlers_then_installs_its_own(tmp_path: Path) -> None:
    parent, child = _probe(_FORKED, tmp_path)
    assert child["before"] == {
        "SIGCHLD": "default",
        "SIGHUP": "ignore",
        "SIGTERM": "default",  # a stop during boot ends the worker at once: it holds nothing yet
        "SIGINT": "ignore",
        "SIGQUIT": "default",
        "SIGTTIN": "default",
        "SIGTTOU": "default",
        "SIGUSR1": "ignore",  # the supervisor passes it on; its default action would end the worker
        "SIGPIPE": "ignore",
    }
    assert child["after"] == {
        **child["before"],
        "SIGTERM": "handler",
        "SIGQUIT": "handler",
        "SIGUSR1": "handler",
    }  # SIGINT stays ignored: Ctrl-C reaches the process group, the supervisor decides
    assert child["dump"] is True  # faulthandler answers SIGUSR2
    assert child["notify"] is None
    assert child["draw"] != parent["parent_draw"]  # reseeded: workers do not share their jitter


def test_a_foreground_worker_handles_ctrl_c_itself(tmp_path: Path) -> None:
    _, child = _probe(_FOREGROUND, tmp_path)
    # From a terminal Ctrl-C arrives with Python's KeyboardInterrupt handler, and the worker's own
    # replaces it. A shell starts a background job (`make test &` in a script) with SIGINT ignored:
    # then it stays ignored, as for any program started so, and the probe inherits that from us.
    ctrl_c = "ignore" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "handler"
    assert child["before"]["SIGINT"] == ctrl_c
    assert child["after"] == {
        "SIGCHLD": "default",
        "SIGHUP": "ignore",
        "SIGTERM": "handler",
        "SIGINT": ctrl_c,
        "SIGQUIT": "handler",
        "SIGTTIN": "default",
        "SIGTTOU": "default",
        "SIGUSR1": "handler",
        "SIGPIPE": "ignore",
    }
    assert child["dump"] is True
