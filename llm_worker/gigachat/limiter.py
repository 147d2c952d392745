"""Host-wide limit on GigaChat calls in flight, shared by every worker process; the cap learns the account's.

GigaChat limits parallel requests per account ("streams": 1 for a personal key), and the account is
shared by all worker processes of a host. So the limit lives in a directory of lock files:

* ``permit-0`` .. ``permit-<max-1>``: a call in flight holds an exclusive ``flock`` on one of them.
  The kernel drops the flocks of a process that dies, so a worker killed with SIGKILL mid-call
  leaks nothing: there is no count to repair.
* ``cap``: the current cap and what it learnt (the record and its rules: cap.py), changed under an
  flock of its own. A call only takes a permit with an index below the cap.

When the cap shrinks, calls already holding higher permits finish normally; new calls wait until
they have ended (each would only be refused again). Every change is logged
(``GigaChat host-wide call cap A -> B``) and readable with :func:`read_cap`.

Cost per call, uncontended (measured by tests/gigachat_client/test_limiter.py): acquire + release is
one pread of the record and one flock per permit tried, then one flock to release; ``on_success``
takes the record's flock only when the cap may grow.

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
from llm_worker.gigachat.cap import NEVER, RECORD_BYTES, CapRecord, CapRules
from llm_worker.gigachat.models import MODEL_BUSY

log = logging.getLogger(__name__)

POLL_MIN_S = 0.005
POLL_MAX_S = 0.020
ADMIT_S = 0.1  # a refused call is answered within this (one round trip): longer without 429 = admitted


def default_directory(settings: Settings) -> Path:
    """GIGACHAT_LIMITER_DIR, else a per-user directory in $STATE_DIRECTORY, $RUNTIME_DIRECTORY or /tmp,
    per account.

    The directory holds the day's token spending and the learnt cap as well as the locks, so systemd's
    state directory (kept across restarts and reboots) comes before its runtime directory, which
    systemd removes whenever the service stops.
    """
    env_dir = os.environ.get("STATE_DIRECTORY") or os.environ.get("RUNTIME_DIRECTORY")
    if settings.gigachat_limiter_dir:
        base = Path(settings.gigachat_limiter_dir)
    elif env_dir:
        base = Path(env_dir.split(":")[0]) / "llm-service-limiter"
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


def read_cap(directory: Path) -> CapRecord | None:
    """The cap record of a limiter directory, for tools (bench/account_limit.py samples it)."""
    try:
        return CapRecord.parse((directory / "cap").read_bytes()[:RECORD_BYTES])
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
    """Cross-process permits under a cap that learns the account's limit. Thread-safe; one per process."""

    def __init__(
        self,
        *,
        directory: Path,
        max_concurrency: int,
        increase_after: int = 10,
        decrease_window_s: float = 1.0,
        probe_after_s: float = 30.0,
        admit_s: float = ADMIT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.directory = directory
        self.max_concurrency = max_concurrency
        self._increase_after = increase_after
        self._rules = CapRules(
            max_concurrency=max_concurrency,
            decrease_window_s=decrease_window_s,
            probe_after_s=probe_after_s,
            admit_s=admit_s,
        )
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
        self._last = CapRecord.fresh(clock())
        # (decrease, cap) after which no permit at or above that cap was held any more.
        self._drained: tuple[float, int] = (NEVER, 0)
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
        return self._bounded(self._record())

    def _record(self) -> CapRecord:
        self._check_fork()
        record = CapRecord.parse(os.pread(self._cap_fd, RECORD_BYTES, 0))
        if record is not None:  # else a torn read: keep the last good record
            self._last = record
        return self._last

    def _bounded(self, record: CapRecord) -> int:
        return max(1, min(self.max_concurrency, record.cap))

    def acquire(self, deadline: float) -> Permit:
        """Wait for a free slot until ``deadline`` (monotonic); TransientTaskError(MODEL_BUSY) after it."""
        while True:
            record = self._record()
            permit = self._try_acquire(record)
            if permit is not None:
                return permit
            now = self._clock()
            if self._grow_when_admitted(record, now):
                continue
            remaining = deadline - now
            if remaining <= 0:
                raise TransientTaskError(
                    f"no GigaChat call slot became free before the deadline (host cap {self.cap})",
                    code=MODEL_BUSY,
                )
            # Polling, not a queue: waiting processes share nothing but the files. The jitter keeps
            # waiters from retrying in lockstep. Measured hand-off (bench/account_direct.py): a few
            # ms, about 1 % of a 0.3 s call.
            pause = POLL_MIN_S + self._rng() * (POLL_MAX_S - POLL_MIN_S)
            self._sleep(min(pause, remaining))

    def _grow_when_admitted(self, record: CapRecord, now: float) -> bool:
        """Slow start with every place taken: grow when the cap stood long enough without a 429."""
        return self._grow(self._rules.admitted, record, now)

    def _grow(
        self, rule: Callable[[CapRecord, float], CapRecord | None], record: CapRecord, now: float
    ) -> bool:
        """Apply a growth ``rule``: checked on ``record`` first, so the common "no" takes no file lock."""
        if rule(record, now) is None:
            return False
        with self._cap_update() as (old, later):
            new = rule(old, later)
            if new is None:
                return False
            self._write(new)
        log.info("GigaChat host-wide call cap %d -> %d", old.cap, new.cap)
        return True

    def on_rate_limited(self, sent_at: float | None = None) -> None:
        """A call (sent at ``sent_at``, e.g. ``Permit.acquired_at``) got 429, its permit still held.

        The account refused at the current in-flight level: cap to one below it.
        """
        with self._cap_update() as (old, now):
            new, refused_at = self._rules.refused(old, now, sent_at, self._in_flight)
            self._write(new)
        log.info(
            "GigaChat answered 429 with %d calls in flight: host-wide call cap %d -> %d",
            refused_at,
            old.cap,
            new.cap,
        )
        self._successes = 0

    def on_success(self) -> None:
        """A call succeeded: below a learnt ceiling, each ``increase_after`` successes may add one.

        Not in slow start: calls that end together would each add one at once and overshoot the
        account by as many (TCP's slow start); there the cap grows by waiting (cap.py).
        """
        with self._cap_lock:
            if not self._last.ceiling:
                return
            self._successes += 1
            if self._successes < self._increase_after:
                return
            self._successes = 0
        self._grow(self._rules.grown, self._record(), self._clock())

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

    def _try_acquire(self, record: CapRecord) -> Permit | None:
        cap = self._bounded(record)
        with self._lock:
            if not self._above_cap_drained(record, cap):
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

    def _above_cap_drained(self, record: CapRecord, cap: int) -> bool:
        """After a decrease, whether the calls holding permits at or above the cap have all ended.

        While they run the account is busy: a new call now would only be refused (and count as a new
        429). Once none is held, none will be again until the cap goes lower (permits are only taken
        below the cap), so each process probes those permits once per lower cap: call with ``_lock``.
        """
        if record.ceiling == 0:
            return True
        drained_at, drained_cap = self._drained
        if drained_at == record.decreased_at and drained_cap <= cap:
            return True
        if any(self._held_now(index) for index in range(cap, self.max_concurrency)):
            return False
        self._drained = (record.decreased_at, cap)
        return True

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
        self._settle_record()

    def _settle_record(self) -> None:
        """A new account gets a fresh record (its slow start timed from now); one from before a reboot
        has its times moved into this boot's clock. Both under the flock, so one process does it."""
        with self._cap_update() as (_, now):
            record = CapRecord.parse(os.pread(self._cap_fd, RECORD_BYTES, 0))
            settled = CapRecord.fresh(now) if record is None else record.since_boot(now)
            if settled != record:
                self._write(settled)
