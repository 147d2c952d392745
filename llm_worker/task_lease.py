"""One run of a task at a time on this host: a lease per task id, an flock-ed file.

Two deliveries of one task can run at once: two messages with the same task_id in one worker, or a
message whose partition was revoked while its model call went on, redelivered to another worker
process. Without a lease both would call the model. With it the second waits until the first has
published its final status and written the final-status marker, then finds the marker and sends
nothing or the stored outcome (llm_worker/pipeline.py); the model is called once.

The lease is a lock file ``<GIGACHAT_LIMITER_DIR>/tasks/<sha256 of the task id>.lock``. flock locks
belong to an open file description, so they exclude task threads of one process as well as other
processes, and the kernel drops them when a holder dies (kill -9 included): a lease never outlives
its holder. The holder unlinks the file before unlocking, so files do not pile up; a waiter that
locked a file unlinked meanwhile sees that its inode is no longer the path's and tries again.

Host-wide only: a worker on another host does not see it (docs/worker.md, "Duplicates").
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

WAIT_STEP_S = 0.2  # how often a waiting delivery tries the lease again


class Lease:
    """A held lease; :meth:`release` once the task's final status is out (or it was handed back)."""

    def __init__(self, *, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd

    def release(self) -> None:
        try:
            self._path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the lock


class TaskLeases:
    """Leases of this host's task ids, in ``directory`` (created 0700 on first use)."""

    def __init__(self, *, directory: Path) -> None:
        self._directory = directory

    def acquire(self, task_id: str, wait: Callable[[float], None]) -> Lease:
        """Take the task's lease, waiting while another delivery holds it.

        ``wait(seconds)`` pauses between tries; it raises to give up (the task is handed back).
        """
        path = self._directory / f"{hashlib.sha256(task_id.encode()).hexdigest()}.lock"
        waited = False
        while True:
            lease = self._try(path)
            if lease is not None:
                if waited:
                    log.info("Task %s: the other delivery of this task ended; going on", task_id)
                return lease
            if not waited:
                log.info("Task %s is being run by another delivery on this host; waiting for it", task_id)
                waited = True
            wait(WAIT_STEP_S)

    def _try(self, path: Path) -> Lease | None:
        fd = self._open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if current != os.fstat(fd).st_ino:  # the holder unlinked it between our open and our lock
            os.close(fd)
            return self._try(path)
        return Lease(path=path, fd=fd)

    def _open(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
