"""One worker slot: its identity, its current process and its state machine (docs/supervisor.md).

Runs in the supervisor process. A slot keeps its index, and so its Kafka ``group_instance_id``
(``llm-worker-<WORKER_INSTANCE_PREFIX>-<index>``), across restarts; only the pid and the
per-process fields change. Every state change goes through :meth:`Slot.move`, which raises
:class:`IllegalTransitionError` on a move the diagram in ``docs/supervisor.md`` does not allow.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from llm_service.errors import LlmServiceError
from llm_service.instance_id import group_instance_id, instance_prefix


class SlotState(enum.Enum):
    """What the supervisor is doing with a slot. The names are shown in ``llmctl status``."""

    STOPPED = "STOPPED"  # no process and none wanted (beyond the pool size, or after a stop)
    STARTING = "STARTING"  # forked; waiting for the worker to report RUNNING
    RUNNING = "RUNNING"  # the worker reported RUNNING and heartbeats
    DRAINING = "DRAINING"  # SIGTERM sent: finish in-flight tasks, commit, exit 0
    STOPPING = "STOPPING"  # forced: SIGQUIT or SIGKILL sent, waiting to reap
    BACKOFF = "BACKOFF"  # died quickly; waits before the next start
    FATAL = "FATAL"  # too many quick failures or a config error; retried after a cool-off
    CONFLICT = "CONFLICT"  # fenced: another process holds this slot's group_instance_id; not restarted


LIVE = frozenset({SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING, SlotState.STOPPING})
_AFTER_EXIT = frozenset(
    {SlotState.STARTING, SlotState.BACKOFF, SlotState.FATAL, SlotState.STOPPED, SlotState.CONFLICT}
)

TRANSITIONS: dict[SlotState, frozenset[SlotState]] = {
    SlotState.STOPPED: frozenset({SlotState.STARTING, SlotState.BACKOFF}),  # BACKOFF: fork failed
    SlotState.STARTING: frozenset({SlotState.RUNNING, SlotState.DRAINING, SlotState.STOPPING}) | _AFTER_EXIT,
    SlotState.RUNNING: frozenset({SlotState.DRAINING, SlotState.STOPPING}) | _AFTER_EXIT,
    SlotState.DRAINING: frozenset({SlotState.STOPPING}) | _AFTER_EXIT,
    SlotState.STOPPING: _AFTER_EXIT,
    SlotState.BACKOFF: frozenset({SlotState.STARTING, SlotState.STOPPED}),
    SlotState.FATAL: frozenset({SlotState.STARTING, SlotState.BACKOFF, SlotState.STOPPED}),
    # Never restarted: a new process would fence the other holder in turn. Left on scale down or stop;
    # a supervisor restart clears it after its start-up check (supervisor/instance_claim.py).
    SlotState.CONFLICT: frozenset({SlotState.STOPPED}),
}


class IllegalTransitionError(LlmServiceError):
    """A bug in the supervisor: a slot was asked to make a move its state machine forbids."""


class StopReason(enum.Enum):
    """Why the supervisor asked a worker to go; decides what happens after it exits."""

    NONE = "none"
    RECYCLE = "recycle"  # RSS soft limit or max tasks: replace at once
    RELOAD = "reload"  # rolling restart after SIGHUP: replace at once with the new settings
    HUNG = "hung"  # heartbeat timeout: replace at once
    RSS_HARD = "rss_hard"  # over the hard RSS limit: replace at once
    SCALE_DOWN = "scale_down"  # the pool shrank: do not replace
    SHUTDOWN = "shutdown"  # the supervisor is stopping: do not replace


@dataclass(kw_only=True)
class Slot:
    """The supervisor's record of one slot: one record per child process, no parallel lists."""

    index: int
    hostname: str
    instance_prefix: str = ""  # WORKER_INSTANCE_PREFIX as resolved at start; empty: the host name
    state: SlotState = SlotState.STOPPED
    pid: int = 0
    since: float = 0.0  # monotonic time of the last state change
    spawned_at: float = 0.0
    restarts: int = 0  # processes started in this slot after the first one
    quick_failures: int = 0  # consecutive
    boot_failures: int = 0  # consecutive bootstrap failures, the worker's own count carried across restarts
    retry_at: float = 0.0  # BACKOFF/FATAL: when to start again
    deadline: float = 0.0  # DRAINING/STOPPING: when to escalate
    stop_reason: StopReason = StopReason.NONE
    generation: int = 0  # the settings generation the current process was started with
    max_tasks: int = 0  # this process's recycle target (0: none)
    reached_running: bool = False  # the current process reported RUNNING at least once
    sigkilled: bool = False  # SIGKILL was sent to the current process
    last_exit: str = ""

    @property
    def group_instance_id(self) -> str:
        return group_instance_id(instance_prefix(self.instance_prefix, self.hostname), self.index)

    @property
    def worker_id(self) -> str:
        return f"{self.hostname}:{self.index}:{self.pid}"

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def move(self, new: SlotState, now: float) -> None:
        """The one transition function. Raises IllegalTransitionError on a move the diagram forbids."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransitionError(
                f"slot {self.index}: {self.state.value} -> {new.value} is not allowed"
            )
        self.state = new
        self.since = now
