"""The one list of signals: which the supervisor handles, and which a worker handles, ignores or resets.

Read by supervisor/signals.py (the supervisor's handlers), llm_service/worker_setup.py (the first
step of every worker process) and llm_worker/process.py (the worker's own handlers). Every handler
only takes a note (docs/supervisor.md, docs/worker.md). No signal is blocked (masked) anywhere: a
handler that only takes a note never needs it.
"""

from __future__ import annotations

import signal

# Noted by the supervisor and turned into a method call by its main loop: SIGCHLD reap, SIGHUP
# reload, SIGTERM and SIGINT graceful stop, SIGQUIT fast stop, SIGTTIN one worker more, SIGTTOU one
# fewer, SIGUSR1 reopen log files (and pass it on to the workers).
SUPERVISOR_HANDLED: tuple[signal.Signals, ...] = (
    signal.SIGCHLD,
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
)

# Noted by a worker once run_worker has started: SIGTERM and SIGINT graceful stop (the second one a
# fast stop), SIGQUIT fast stop, SIGUSR1 reopen log files.
WORKER_HANDLED: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)

# Ignored by a worker all its life. SIGHUP: the supervisor reloads by replacing workers, not by
# signalling them, and a terminal's hang-up must not end them. SIGPIPE: Python's own start-up state,
# so a write to a socket the peer closed raises BrokenPipeError instead of killing the process.
WORKER_IGNORED: tuple[signal.Signals, ...] = (signal.SIGHUP, signal.SIGPIPE)

# Ignored in a worker the supervisor forked, handled by a foreground ``llm-worker``: Ctrl-C in the
# supervisor's terminal reaches the whole process group, and the supervisor alone decides how its
# workers stop.
IGNORED_UNDER_SUPERVISOR: tuple[signal.Signals, ...] = (signal.SIGINT,)

# Ignored from the fork until the worker installs its handler: the supervisor passes SIGUSR1 on to
# every worker, and its default action would end one that is still booting.
IGNORED_UNTIL_HANDLED: tuple[signal.Signals, ...] = (signal.SIGUSR1,)

# Back to the default action in a new worker: the supervisor's handlers mean nothing there. Until the
# worker installs its own, SIGTERM and SIGQUIT end a booting worker at once (it holds nothing yet).
RESET_IN_WORKER: tuple[signal.Signals, ...] = tuple(
    s
    for s in SUPERVISOR_HANDLED
    if s not in (*WORKER_IGNORED, *IGNORED_UNDER_SUPERVISOR, *IGNORED_UNTIL_HANDLED)
)

# A worker's faulthandler dumps every thread's stack to stderr on it; the supervisor sends it to a
# worker that stopped heartbeating, before SIGTERM (supervisor/pool.py).
DUMP_SIGNAL = signal.SIGUSR2
