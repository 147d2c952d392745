"""The supervisor's own life cycle: a named state and the one function that moves it.

Runs in the supervisor process, owned by :class:`supervisor.arbiter.Arbiter`. Like a slot
(:mod:`supervisor.slot`), every change goes through :meth:`Life.move`, which raises
:class:`~supervisor.slot.IllegalTransitionError` on a move the table below does not allow; the
diagram is in docs/supervisor.md ("The supervisor's own states").
"""

from __future__ import annotations

import enum

from supervisor.slot import IllegalTransitionError


class LifeState(enum.Enum):
    """Where the supervisor is in its life; STOPPING and FAST_STOP show in ``llmctl status``."""

    STARTING = "starting"  # workers started, READY not yet sent
    RUNNING = "running"  # READY sent: every wanted worker started
    RELOADING = "reloading"  # a reload replaces the workers one at a time (rolling restart)
    STOPPING = "stopping"  # graceful stop: SIGTERM sent, SIGKILL at the one deadline
    FAST_STOP = "fast stop"  # fast stop: SIGQUIT sent, SIGKILL at the one deadline

    @property
    def stopping(self) -> bool:
        return self in _STOPS

    @property
    def note(self) -> str:
        """What the process title adds: nothing in the usual states."""
        return "" if self in (LifeState.STARTING, LifeState.RUNNING) else self.value


_STOPS = frozenset({LifeState.STOPPING, LifeState.FAST_STOP})

TRANSITIONS: dict[LifeState, frozenset[LifeState]] = {
    LifeState.STARTING: frozenset({LifeState.RUNNING, LifeState.RELOADING}) | _STOPS,
    LifeState.RUNNING: frozenset({LifeState.RELOADING}) | _STOPS,
    # The end of a rolling restart sends READY: from RELOADING the supervisor is RUNNING, even when the
    # reload came before the first READY.
    LifeState.RELOADING: frozenset({LifeState.RUNNING}) | _STOPS,
    # A second stop request forces the stop (SIGKILL) but changes no state: the process is on its way out.
    LifeState.STOPPING: frozenset(),
    LifeState.FAST_STOP: frozenset(),
}


class Life:
    """The supervisor's state; :meth:`move` is the only way to change it."""

    def __init__(self) -> None:
        self.state = LifeState.STARTING

    @property
    def stopping(self) -> bool:
        return self.state.stopping

    def move(self, new: LifeState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransitionError(f"supervisor: {self.state.value} -> {new.value} is not allowed")
        self.state = new
