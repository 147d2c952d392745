"""Process titles, so ``ps`` and ``top`` show what each process of the service is doing.

``llm-supervisor: 2 workers, ok`` for the supervisor (set from its main loop) and
``llm-worker[2]: 3/8 busy`` for a worker. :func:`set_worker_title` is for the worker process: the
supervisor sets the first title right after fork, the worker's consumer loop refreshes it when the
number of tasks in flight or its state changes. Shared by both processes, hence here.
"""

from __future__ import annotations

from setproctitle import setproctitle


def supervisor_title(*, workers: int, health: str, note: str = "") -> str:
    title = f"llm-supervisor: {workers} worker{'s' if workers != 1 else ''}, {health}"
    return f"{title}, {note}" if note else title


def worker_title(slot: int, *, busy: int, capacity: int, note: str = "") -> str:
    title = f"llm-worker[{slot}]: {busy}/{capacity} busy"
    return f"{title}, {note}" if note else title


def set_supervisor_title(*, workers: int, health: str, note: str = "") -> None:
    """Called by the supervisor's main loop when the pool size or health changes."""
    setproctitle(supervisor_title(workers=workers, health=health, note=note))


def set_worker_title(slot: int, *, busy: int, capacity: int, note: str = "") -> None:
    """Called in a worker process (by the supervisor's fork code, then by the worker loop)."""
    setproctitle(worker_title(slot, busy=busy, capacity=capacity, note=note))
