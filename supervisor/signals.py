"""Signal handlers that only take notes (docs/architecture.md, "Conventions").

Runs in the supervisor process, for SUPERVISOR_HANDLED of llm_service/signals.py. Each handler
appends the signal number to a queue; Python's C-level handler also writes a byte to the wakeup pipe
(``signal.set_wakeup_fd``), which wakes the main loop's ``select`` at once. The loop then pops the
notes and turns each into a named method call. No logging, no locks and no I/O happen inside a
handler.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
from types import FrameType

from llm_service.signals import SUPERVISOR_HANDLED


class SignalNotes:
    """The supervisor's signal queue and wakeup pipe. Install once, in the main thread."""

    def __init__(self, *, signals: tuple[signal.Signals, ...] = SUPERVISOR_HANDLED) -> None:
        self._signals = signals
        self._notes: collections.deque[int] = collections.deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        """The wakeup pipe's read end, for the loop's selector."""
        return self._read_fd

    def install(self) -> None:
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in self._signals:
            signal.signal(sig, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._notes.append(signum)  # deque.append is atomic; nothing else happens here

    def pending(self) -> bool:
        """A signal was noted and not popped yet (no system call: the loop asks on every turn)."""
        return bool(self._notes)

    def drain(self) -> None:
        """Empty the wakeup pipe; the loop's selector calls it when the pipe is readable."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def pop(self) -> list[int]:
        """Every signal noted since the last call, oldest first; also empties the wakeup pipe."""
        self.drain()
        notes: list[int] = []
        while self._notes:
            notes.append(self._notes.popleft())
        return notes

    def uninstall(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in self._signals:
            signal.signal(sig, signal.SIG_DFL)

    def close(self) -> None:
        """Close the pipe (the supervisor at exit, and a freshly forked worker)."""
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
