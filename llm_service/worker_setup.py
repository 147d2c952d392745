"""The first step of every worker process, before ``llm_worker.process.run_worker``.

One function for both ways a worker starts: forked by the supervisor (supervisor/spawn.py, between
``os.fork`` and the entry point) and in the foreground (``llm-worker``, llm_worker/cli.py). It drops
what the parent owned (its signal handlers and wakeup fd, its random state, systemd's variables),
sets the signal dispositions of llm_service/signals.py, arms faulthandler, and sets up logging and
the process title. The worker then installs its own handlers and makes its own clients.
"""

from __future__ import annotations

import faulthandler
import os
import random
import signal

from llm_service.config import Settings
from llm_service.logs import configure_logging_from
from llm_service.proctitle import set_worker_title
from llm_service.signals import (
    DUMP_SIGNAL,
    IGNORED_UNDER_SUPERVISOR,
    IGNORED_UNTIL_HANDLED,
    RESET_IN_WORKER,
    WORKER_IGNORED,
)

# systemd's variables are the supervisor's: a worker that read NOTIFY_SOCKET would speak for it.
_SUPERVISOR_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def prepare_worker_process(*, settings: Settings, slot: int, supervised: bool) -> None:
    """Make this process a clean worker. Call once, first, on the process's main thread.

    ``supervised``: forked by the supervisor (SIGINT stays ignored, the supervisor's environment is
    dropped and the settings it loaded are exported), rather than started as ``llm-worker``.
    """
    reset_signals(supervised=supervised)
    random.seed()  # a forked child starts with its parent's random state: every worker's jitter would align
    if supervised:
        for name in _SUPERVISOR_ENV:
            os.environ.pop(name, None)
        os.environ.update(settings.as_environ())
    faulthandler.register(DUMP_SIGNAL, all_threads=True, chain=False)
    configure_logging_from(settings, service=f"llm-worker[{slot}]")
    set_worker_title(slot, busy=0, capacity=settings.worker_max_concurrent_tasks, note="booting")


def reset_signals(*, supervised: bool) -> None:
    """Set the dispositions a worker starts with (llm_service/signals.py); no handler of ours yet."""
    signal.set_wakeup_fd(-1)  # after a fork it still points at the supervisor's wakeup pipe
    for sig in RESET_IN_WORKER:
        signal.signal(sig, signal.SIG_DFL)
    ignored = (*WORKER_IGNORED, *IGNORED_UNTIL_HANDLED, *(IGNORED_UNDER_SUPERVISOR if supervised else ()))
    for sig in ignored:
        signal.signal(sig, signal.SIG_IGN)
