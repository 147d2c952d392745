"""Host-wide limit on GigaChat calls in flight, shared by every worker process, adapted by AIMD.

GigaChat limits parallel requests per account ("streams": 1 for a personal key), and the account is
shared by all worker processes of a host. So the limit lives in a directory of lock files:

* ``permit-0`` .. ``permit-<max-1>``: a call in flight holds an exclusive ``flock`` on one of them.
  The kernel drops the flocks of a process that dies, so a worker killed with SIGKILL mid-call
  leaks nothing: there is no count to repair.
* ``cap``: the current cap and what it learnt (``<cap> <decreased_at> <ceiling> <cap>``), changed
  under an flock of its own. A call only takes a permit with an index below the cap.

How the cap finds the account's real limit (docs/gigachat-client.md, "Finding the account's limit"):

* Slow start: a fresh cap file starts at 1 and grows by one per successful call, until the first 429.
* On a 429 the host counts the calls in flight (held permits, this one included): the account
  refused at that level, so the ceiling becomes that count and the cap drops to one below it (at
  least 1, and always below the old cap). Each further 429 of the same burst (its call sent before
  that decrease, within ``decrease_window_s``) was one more call in flight the account refused:
  the cap goes down by one more (a burst of k refusals at n in flight ends at n - k).
* Below the ceiling the cap grows by one per ``increase_after`` successes in a process; it tries the
  ceiling itself again only ``probe_after_s`` after the last decrease (hysteresis: one 429 per
  probe interval at most, instead of one every few calls). Never above ``max_concurrency``.
* Every change is logged (``GigaChat host-wide call cap A -> B``) and readable with :func:`read_cap`.

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
import dataclasses
import fcntl
import hashlib
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CapRecord:
    """The shared ``cap`` file: the cap, when it last went down, and the lowest level refused."""

    cap: int
    decreased_at: float
    ceiling: int  # in-flight count at the last 429; 0 = none seen yet (slow start)

    @classmethod
    def parse(cls, raw: bytes) -> CapRecord | None:
        """None for an empty or torn record (written without the readers' cooperation)."""
        fields = raw.split()
        if len(fields) != 4 or fields[0] != fields[3] or not fields[0].isdigit() or not fields[2].isdigit():
            return None
        return cls(int(fields[0]), _parse_time(fields[1]), int(fields[2]))

    def encode(self) -> bytes:
        # Fixed width, so a shorter record never leaves the tail of a longer one behind.
        text = f"{self.cap} {self.decreased_at:.6f} {self.ceiling} {self.cap}"
        return (text.ljust(_CAP_RECORD_BYTES - 1) + "\n").encode()


def read_cap(directory: Path) -> CapRecord | None:
    """The cap record of a limiter directory, for tools (bench/account_limit.py samples it)."""
    try:
        return CapRecord.parse((directory / "cap").read_bytes()[:_CAP_RECORD_BYTES])
    except FileNotFoundError:
        return None


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
        probe_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.directory = directory
        self.max_concurrency = max_concurrency
        self._increase_after = increase_after
        self._decrease_window_s = decrease_window_s
        self._probe_after_s = probe_after_s
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
        self._last = CapRecord(1, float("-inf"), 0)
        self._open()

    @classmethod
    def from_settings(cls, settings: Settings) -> ConcurrencyLimiter:
        return cls(
            directory=default_directory(settings),
            max_concurrency=settings.gigachat_max_concurrency,
            probe_after_s=settings.gigachat_cap_probe_s,
        )

    @property
    def cap(self) -> int:
        """The current host-wide cap, 1..max_concurrency (read from the shared ``cap`` file)."""
        return self._record().cap

    def _record(self) -> CapRecord:
        self._check_fork()
        raw = os.pread(self._cap_fd, _CAP_RECORD_BYTES, 0)
        record = CapRecord.parse(raw)
        if record is not None:
            self._last = record
        elif not raw.strip():
            self._last = CapRecord(1, float("-inf"), 0)  # a new account: slow start from one call
        # A torn read keeps the last good record.
        return dataclasses.replace(self._last, cap=max(1, min(self.max_concurrency, self._last.cap)))

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
        """A call (sent at ``sent_at``, e.g. ``Permit.acquired_at``) got 429, its permit still held.

        The account refused at the current in-flight level: cap to one below it.
        """
        with self._cap_update() as (old, now):
            stale = sent_at is None or sent_at <= old.decreased_at
            if stale and now - old.decreased_at < self._decrease_window_s:
                # Another refusal of the burst already counted: the calls in flight then included
                # this one, which the account did not admit either, so one fewer fits.
                refused_at = old.cap
                new_cap = max(1, old.cap - 1)
                self._write(CapRecord(new_cap, old.decreased_at, refused_at))
            else:
                refused_at = max(1, self._in_flight())
                new_cap = max(1, min(old.cap - 1, refused_at - 1))
                self._write(CapRecord(new_cap, now, refused_at))
        log.info(
            "GigaChat answered 429 with %d calls in flight: host-wide call cap %d -> %d",
            refused_at,
            old.cap,
            new_cap,
        )
        self._successes = 0

    def on_success(self) -> None:
        """A call succeeded: grow the cap (see the module docstring for how fast)."""
        with self._cap_lock:
            self._successes += 1
            slow_start = self._last.ceiling == 0
            if not slow_start and self._successes < self._increase_after:
                return
            self._successes = 0
        with self._cap_update() as (old, now):
            if not self._may_grow(old, now):
                return
            self._write(dataclasses.replace(old, cap=old.cap + 1))
        log.info("GigaChat host-wide call cap %d -> %d", old.cap, old.cap + 1)

    def _may_grow(self, record: CapRecord, now: float) -> bool:
        if record.cap >= self.max_concurrency:
            return False
        since_decrease = now - record.decreased_at
        # Right after a decrease, successes of calls sent before it say nothing new.
        if since_decrease < self._decrease_window_s:
            return False
        if record.ceiling and record.cap + 1 >= record.ceiling:
            return since_decrease >= self._probe_after_s  # try the level that was refused: rarely
        return True

    def _in_flight(self) -> int:
        """Permits held host-wide now: ours, plus those another process holds (a lock probe fails)."""
        with self._lock:
            return sum(1 for index in range(self.max_concurrency) if self._held_now(index))

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
            # After a decrease, calls still holding permits at or above the cap keep the account busy:
            # a new call now would only be refused (and count as a new 429), so wait for them to end.
            if self._any_held(range(cap, self.max_concurrency)):
                return None
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

    def _any_held(self, indices: range) -> bool:
        """Whether any of these permits is held, by this process or another; call with ``_lock`` held."""
        return any(self._held_now(index) for index in indices)

    def _held_now(self, index: int) -> bool:
        if index in self._held:
            return True
        fd = self._permit_fds[index]
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def _release(self, index: int) -> None:
        with self._lock:
            if index in self._held:
                fcntl.flock(self._permit_fds[index], fcntl.LOCK_UN)
                self._held.discard(index)

    @contextlib.contextmanager
    def _cap_update(self) -> Iterator[tuple[CapRecord, float]]:
        """Hold the cap file's flock (and the in-process lock); yield (record, now)."""
        self._check_fork()
        with self._cap_lock:
            fcntl.flock(self._cap_fd, fcntl.LOCK_EX)
            try:
                yield self._record(), self._clock()
            finally:
                fcntl.flock(self._cap_fd, fcntl.LOCK_UN)

    def _write(self, record: CapRecord) -> None:
        os.pwrite(self._cap_fd, record.encode(), 0)
        self._last = record

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
