"""Host-wide limit on GigaChat calls in flight, shared by every worker process, adapted by AIMD.

GigaChat limits parallel requests per account ("streams": 1 for a personal key), and the account is
shared by all worker processes of a host. So the limit lives in a directory of lock files:

* ``permit-0`` .. ``permit-<max-1>``: a call in flight holds an exclusive ``flock`` on one of them.
  The kernel drops the flocks of a process that dies, so a worker killed with SIGKILL mid-call
  leaks nothing: there is no count to repair.
* ``cap``: the current AIMD cap (``<cap> <decreased_at> <cap>``), changed under an flock of its own.
  A call only takes a permit with an index below the cap. On a 429 the cap halves (not below 1).
  One burst of 429s counts once: a 429 only halves again if its call was sent after the last
  decrease (calls already in flight then reflect the old cap) or ``decrease_window_s`` has passed.
  After ``increase_after`` successes in a process the cap grows by one (not within the decrease
  window, never above ``max_concurrency``).

When the cap shrinks, calls already holding higher permits finish normally; new calls wait.

The directory is keyed by API URL, scope and a hash of the key, so two accounts never share a
limit. It is private: created 0700 (tightened to 0700 when ours and looser) and refused when another
user owns it, or its parent is another user's or writable by others without the sticky bit. Anyone
who could write there could hold every permit and stop this host's model calls.

Who uses it: one ConcurrencyLimiter per worker process, created after the fork (flocks belong to
open file descriptions, which a fork would share), used from all task threads via GigaChatClient.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from llm_service.config import Settings
from llm_service.errors import ConfigError, TransientTaskError
from llm_worker.gigachat.models import MODEL_BUSY

log = logging.getLogger(__name__)

POLL_MIN_S = 0.005
POLL_MAX_S = 0.020
_CAP_RECORD_BYTES = 64


def default_directory(settings: Settings) -> Path:
    """GIGACHAT_LIMITER_DIR, else a per-user directory in $RUNTIME_DIRECTORY or /tmp, per account."""
    if settings.gigachat_limiter_dir:
        base = Path(settings.gigachat_limiter_dir)
    elif os.environ.get("RUNTIME_DIRECTORY"):
        base = Path(os.environ["RUNTIME_DIRECTORY"]) / "llm-service-limiter"
    else:
        base = Path(f"/tmp/llm-service-limiter-{os.getuid()}")
    # Only a digest of the key: it separates accounts without the secret appearing in a path.
    account = "\n".join((settings.gigachat_api_url, settings.gigachat_scope, settings.gigachat_auth_key))
    return base / hashlib.sha256(account.encode()).hexdigest()[:16]


def private_directory(directory: Path) -> None:
    """Make ``directory`` (and a missing parent) 0700; ConfigError when it is not safely ours.

    Called in the worker when the limiter opens; the worker ends BOOT_FAILED with the reason.
    """
    uid = os.getuid()
    parent = directory.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = parent.stat()
    if info.st_uid not in (uid, 0) or (info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX):
        raise ConfigError(
            f"GIGACHAT_LIMITER_DIR: {parent} belongs to uid {info.st_uid} or others may write to it; "
            "use a directory of the service user"
        )
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise ConfigError(
            f"GIGACHAT_LIMITER_DIR: {directory} is not a directory of uid {uid} (owner {info.st_uid}); "
            "refusing to share call permits with another user"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def _parse_time(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return float("-inf")  # a damaged record must not block decreases forever


class Permit:
    """One call slot. Release it exactly once (``with`` does); a second release is a no-op."""

    def __init__(self, limiter: ConcurrencyLimiter, index: int, acquired_at: float) -> None:
        self._limiter = limiter
        self.index = index
        self.acquired_at = acquired_at  # the limiter's clock; tells on_rate_limited how old a 429 is
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self.index)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class ConcurrencyLimiter:
    """Cross-process permits with an AIMD cap. Thread-safe; one instance per process."""

    def __init__(
        self,
        *,
        directory: Path,
        max_concurrency: int,
        increase_after: int = 10,
        decrease_window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.directory = directory
        self.max_concurrency = max_concurrency
        self._increase_after = increase_after
        self._decrease_window_s = decrease_window_s
        self._clock = clock  # CLOCK_MONOTONIC is one clock for all processes of a Linux host
        self._sleep = sleep
        self._rng = rng
        # Guards the fds and ``_held``: flock cannot tell two threads of one process apart.
        self._lock = threading.Lock()
        self._cap_lock = threading.Lock()
        self._held: set[int] = set()
        self._successes = 0
        self._pid = -1
        self._permit_fds: list[int] = []
        self._cap_fd = -1
        self._last_cap = max_concurrency
        self._open()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConcurrencyLimiter:
        return cls(directory=default_directory(settings), max_concurrency=settings.gigachat_max_concurrency)

    @property
    def cap(self) -> int:
        """The current host-wide cap, 1..max_concurrency (read from the shared ``cap`` file)."""
        self._check_fork()
        record = os.pread(self._cap_fd, _CAP_RECORD_BYTES, 0).split()
        # The record is written without the readers' cooperation; a torn read shows two different
        # caps and is ignored in favour of the last good value.
        if len(record) == 3 and record[0] == record[2] and record[0].isdigit():
            self._last_cap = max(1, min(self.max_concurrency, int(record[0])))
        elif not record:
            self._last_cap = self.max_concurrency
        return self._last_cap

    def acquire(self, deadline: float) -> Permit:
        """Wait for a free slot until ``deadline`` (monotonic); TransientTaskError(MODEL_BUSY) after it."""
        while True:
            permit = self._try_acquire()
            if permit is not None:
                return permit
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TransientTaskError(
                    f"no GigaChat call slot became free before the deadline (host cap {self.cap})",
                    code=MODEL_BUSY,
                )
            # Polling, not a queue: waiting processes share nothing but the files. The jitter keeps
            # waiters from retrying in lockstep.
            pause = POLL_MIN_S + self._rng() * (POLL_MAX_S - POLL_MIN_S)
            self._sleep(min(pause, remaining))

    def on_rate_limited(self, sent_at: float | None = None) -> None:
        """A call (sent at ``sent_at``, e.g. ``Permit.acquired_at``) got 429: halve the host's cap."""
        with self._cap_update() as (cap, decreased_at, now):
            stale = sent_at is None or sent_at <= decreased_at
            if stale and now - decreased_at < self._decrease_window_s:
                return  # a call from before the last decrease: that burst was counted already
            new_cap = max(1, cap // 2)
            self._write_cap(new_cap, now)
        if new_cap != cap:
            log.info("GigaChat answered 429: host-wide call cap %d -> %d", cap, new_cap)
        self._successes = 0

    def on_success(self) -> None:
        """A call succeeded: every ``increase_after`` successes in this process, grow the cap by one."""
        with self._cap_lock:
            self._successes += 1
            if self._successes < self._increase_after:
                return
            self._successes = 0
        with self._cap_update() as (cap, decreased_at, now):
            # Right after a decrease, successes of calls sent before it say nothing new.
            if cap >= self.max_concurrency or now - decreased_at < self._decrease_window_s:
                return
            self._write_cap(cap + 1, decreased_at)
        log.debug("GigaChat host-wide call cap %d -> %d", cap, cap + 1)

    def close(self) -> None:
        """Close the files (releasing any permit still held). Called when the worker stops."""
        with self._lock:
            for fd in [*self._permit_fds, self._cap_fd]:
                if fd >= 0:
                    os.close(fd)
            self._permit_fds, self._cap_fd = [], -1
            self._held.clear()

    def _try_acquire(self) -> Permit | None:
        cap = self.cap
        with self._lock:
            for index in range(cap):
                if index in self._held:
                    continue
                try:
                    fcntl.flock(self._permit_fds[index], fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # held by another process
                self._held.add(index)
                return Permit(self, index, self._clock())
        return None

    def _release(self, index: int) -> None:
        with self._lock:
            if index in self._held:
                fcntl.flock(self._permit_fds[index], fcntl.LOCK_UN)
                self._held.discard(index)

    @contextlib.contextmanager
    def _cap_update(self) -> Iterator[tuple[int, float, float]]:
        """Hold the cap file's flock (and the in-process lock); yield (cap, decreased_at, now)."""
        self._check_fork()
        with self._cap_lock:
            fcntl.flock(self._cap_fd, fcntl.LOCK_EX)
            try:
                record = os.pread(self._cap_fd, _CAP_RECORD_BYTES, 0).split()
                decreased_at = _parse_time(record[1]) if len(record) == 3 else float("-inf")
                yield self.cap, decreased_at, self._clock()
            finally:
                fcntl.flock(self._cap_fd, fcntl.LOCK_UN)

    def _write_cap(self, cap: int, decreased_at: float) -> None:
        # Fixed width, so a shorter record never leaves the tail of a longer one behind.
        record = f"{cap} {decreased_at:.6f} {cap}".ljust(_CAP_RECORD_BYTES - 1) + "\n"
        os.pwrite(self._cap_fd, record.encode(), 0)
        self._last_cap = cap

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            self._reopen_after_fork()

    def _reopen_after_fork(self) -> None:
        # Inherited descriptors share the parent's open file descriptions, hence its flocks: using
        # them would let the child "take" a permit the parent holds, and keeping them open would keep
        # the parent's permits locked after the parent dies. Closing (not LOCK_UN) leaves the
        # parent's locks alone.
        for fd in [*self._permit_fds, self._cap_fd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open()

    def _open(self) -> None:
        private_directory(self.directory)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self._permit_fds = [
            os.open(self.directory / f"permit-{i}", flags, 0o600) for i in range(self.max_concurrency)
        ]
        self._cap_fd = os.open(self.directory / "cap", flags, 0o600)
        self._held = set()
        self._lock = threading.Lock()
        self._cap_lock = threading.Lock()
        self._pid = os.getpid()
