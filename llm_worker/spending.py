"""What the host's pool has spent today, and whether the model refused for money: two small files.

Both live in the host's limiter directory (GIGACHAT_LIMITER_DIR, 0700, see
llm_worker/gigachat/limiter.py), so every worker of the host shares them and they survive worker and
supervisor restarts:

- ``spend-<day>.json``: tokens spent on the budget day ``<day>`` (a date in GIGACHAT_BUDGET_TIMEZONE),
  by the pool and by tenant. A new day is a new file, so budgets start again at local midnight.
- ``payment.json``: present while the model answers 402/403; holds when the next probe call may go.
- ``balance.json``: the last GET /balance reading (GIGACHAT_BALANCE_INTERVAL_S), and when one worker
  last claimed the turn to read it.

Writers take an flock on ``spending.lock`` and replace the file atomically (write, rename), so a
reader never sees half a file and a worker killed mid-update loses at most that update. The payment
and balance files, written seldom, are also fsync-ed. The spend file is not: it is rewritten on every
answered call under the host-wide flock, and a disk flush there made every model call of the host
wait in line for the disk (64 threads adding at once: 8-11 ms per add, so ~100 answered calls a
second for the whole host; 0.8-1.1 ms per add without the flush). A worker
killed by any signal loses nothing by that (the page cache is the kernel's); only a host crash can
lose the last counts, or leave the file empty so that the day counts from zero, as a reboot does
anyway when the limiter directory is in a tmpfs (under systemd it is in the state directory,
llm_worker/gigachat/limiter.py, default_directory).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from llm_worker.json_numbers import finite_number

log = logging.getLogger(__name__)

LOCK_NAME = "spending.lock"
PAYMENT_NAME = "payment.json"
BALANCE_NAME = "balance.json"
KEEP_DAYS = 7  # spend files of older days are removed when a new day starts


@dataclass(frozen=True)
class Spend:
    """Tokens spent on one budget day."""

    day: str
    pool: int = 0
    tenants: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PaymentPause:
    """The model refused for money or rights; intake waits until a probe call succeeds."""

    status: int
    since: float
    next_probe: float


@dataclass(frozen=True)
class Balance:
    """The last GET /balance reading: tokens left per prepaid package (``prepaid`` False: none)."""

    at: float
    prepaid: bool
    packages: dict[str, float]


class SpendingFiles:
    """The spend and payment files of one host; safe to use from many threads and processes."""

    def __init__(
        self, *, directory: Path, zone: ZoneInfo, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._dir = directory
        self._zone = zone
        self._wall_clock = wall_clock
        self._thread_lock = threading.Lock()

    def day(self) -> str:
        now = datetime.datetime.fromtimestamp(self._wall_clock(), tz=self._zone)
        return now.date().isoformat()

    # --- spending --------------------------------------------------------------------------------

    def spent(self) -> Spend:
        day = self.day()
        body = _read_json(self._dir / f"spend-{day}.json")
        tenants = body.get("tenants")
        return Spend(
            day=day,
            pool=_count(body.get("pool")),
            tenants={str(k): _count(v) for k, v in tenants.items()} if isinstance(tenants, dict) else {},
        )

    def add(self, *, tokens: int, tenant: str | None) -> Spend | None:
        """Count ``tokens`` spent now by the pool (and by ``tenant`` when it has one); returns the
        day's spending as written (every worker's, read under the lock), None when nothing was added."""
        return self.add_many(pool=tokens, tenants={tenant: tokens} if tenant is not None else {})

    def add_many(self, *, pool: int, tenants: Mapping[str, int]) -> Spend | None:
        """Count ``pool`` tokens for the pool and ``tenants``' tokens for each tenant in one update."""
        if pool <= 0:
            return None
        with self._locked():
            day = self.day()
            path = self._dir / f"spend-{day}.json"
            if not path.exists():
                self._forget_old_days(day)
            current = self.spent()
            merged = dict(current.tenants)
            for name, tokens in tenants.items():
                merged[name] = merged.get(name, 0) + tokens
            spend = Spend(day=day, pool=current.pool + pool, tenants=merged)
            body = {"day": day, "pool": spend.pool, "tenants": merged}
            _write_json(path, body, durable=False)
            return spend

    def _forget_old_days(self, today: str) -> None:
        oldest = datetime.date.fromisoformat(today) - datetime.timedelta(days=KEEP_DAYS)
        for path in self._dir.glob("spend-*.json"):
            with contextlib.suppress(ValueError, OSError):
                if datetime.date.fromisoformat(path.stem.removeprefix("spend-")) < oldest:
                    path.unlink()

    # --- payment ---------------------------------------------------------------------------------

    def payment(self) -> PaymentPause | None:
        body = _read_json(self._dir / PAYMENT_NAME)
        if not body:
            return None
        return PaymentPause(
            status=_count(body.get("status")),
            since=_float(body.get("since")),
            next_probe=_float(body.get("next_probe")),
        )

    def payment_refused(self, *, status: int, probe_s: float) -> bool:
        """The model answered 402/403: pause (or stay paused) until ``probe_s`` from now; True if new."""
        with self._locked():
            now = self._wall_clock()
            current = self.payment()
            since = current.since if current else now
            body = {"status": status, "since": since, "next_probe": now + probe_s}
            _write_json(self._dir / PAYMENT_NAME, body)
            return current is None

    def claim_probe(self, *, probe_s: float) -> bool:
        """While paused: True for the one caller (across the host) whose turn it is to try a call."""
        with self._locked():
            current = self.payment()
            now = self._wall_clock()
            if current is None or now < current.next_probe:
                return False
            body = {"status": current.status, "since": current.since, "next_probe": now + probe_s}
            _write_json(self._dir / PAYMENT_NAME, body)
            return True

    def payment_ok(self) -> bool:
        """A model call succeeded: end the pause; True if there was one."""
        if not (self._dir / PAYMENT_NAME).exists():
            return False
        with self._locked():
            try:
                (self._dir / PAYMENT_NAME).unlink()
            except FileNotFoundError:
                return False
            return True

    # --- balance ---------------------------------------------------------------------------------

    def balance(self) -> Balance | None:
        """The last GET /balance reading of the host, or None before the first."""
        body = _read_json(self._dir / BALANCE_NAME)
        packages = body.get("packages")
        if not body or not isinstance(packages, dict):
            return None
        return Balance(
            at=_float(body.get("at")),
            prepaid=bool(body.get("prepaid")),
            packages={str(k): _float(v) for k, v in packages.items()},
        )

    def claim_balance(self, *, interval_s: float) -> bool:
        """True for the one worker of the host whose turn it is to read GET /balance."""
        with self._locked():
            current = _read_json(self._dir / BALANCE_NAME)
            now = self._wall_clock()
            if now < _float(current.get("claimed")) + interval_s:
                return False
            _write_json(self._dir / BALANCE_NAME, {**current, "claimed": now})
            return True

    def balance_read(self, packages: dict[str, float] | None) -> None:
        """Store a reading; None means the account has no prepaid packages (GET /balance 403)."""
        with self._locked():
            current = _read_json(self._dir / BALANCE_NAME)
            body = {"claimed": current.get("claimed", 0.0), "at": self._wall_clock()}
            _write_json(
                self._dir / BALANCE_NAME,
                {**body, "prepaid": packages is not None, "packages": packages or {}},
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The threads of this process queue on a lock of their own first: waiters on an flock are all
        # woken at each release to race for it again, which at 64 task threads cost more CPU than the
        # update itself. The flock then orders this process with the others of the host.
        with self._thread_lock:
            fd = os.open(self._dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing drops the flock


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # a damaged or hostile file: never raise
        log.warning("Unreadable spending file %s (%s); counting from zero", path, exc)
        return {}
    return body if isinstance(body, dict) else {}


def _write_json(path: Path, body: dict[str, Any], *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(json.dumps(body, sort_keys=True).encode())
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _float(value: Any) -> float:
    """A finite number, else 0.0: a huge integer or a NaN time must not reach the callers."""
    number = finite_number(value)
    return 0.0 if number is None else number
