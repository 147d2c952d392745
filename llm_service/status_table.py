"""The shared-memory status table: one fixed record per worker slot.

Written by the worker that owns the slot (many threads of it, serialised by a process-local lock),
read by the supervisor without any lock: every record carries a sequence counter that the writer
makes odd before a change and even after it (a seqlock), so a reader retries the rare read that
overlapped a write instead of ever blocking the worker.

Each record also has a small control area the supervisor writes and the worker reads (pause intake,
lower concurrency, drain). Single aligned fields, so no sequence counter is needed there.

The table outlives its workers: after a worker dies the supervisor can still read what it held
(which tasks were in flight, at which stage) and log it.

Who uses it: the supervisor creates it before forking (workers inherit the mapping) and unlinks it
on exit; a lone ``llm-worker`` creates a private one-slot table.
"""

from __future__ import annotations

import enum
import struct
import threading
import time
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, NamedTuple

from llm_service.errors import StaleRecordError
from llm_service.message_ledger import LEDGER_SIZE, DeathLedger, HeldMessage, HeldMessages, held_area_size

MAX_TRACKED_TASKS = 128
READ_ATTEMPTS = 100_000  # backstop for a writer that never lets a read through
READ_SPINS = 1_000  # tries on an unmoved counter that only yield the CPU; later ones nap READ_NAP_S
READ_NAP_S = 0.001
READ_STUCK_S = 1.0  # odd counter unchanged this long: writer stuck or dead. A busy host holds a
# preempted writer off the CPU for a long time: 10 ms, then 100 ms, made a stress test fail at load 8
TASK_ID_BYTES = 128

# The processing-time histogram of finished tasks: upper bounds in seconds, +Inf implied after the last.
# Fixed here because the buckets are counters in shared memory; ALERT_AVG_PROCESSING_S's default
# (120 s) is one of the bounds.
PROCESSING_BUCKETS_S: tuple[float, ...] = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Counters of FAILED tasks by error code. The table only knows their number; the code of each index
# is llm_worker.error_codes.COUNTED (its last index counts every other code).
FAILURE_CODE_COUNTERS = 32

_MAGIC = 0x4C4C4D53  # "LLMS"
# 2: metrics counters (histogram, failures by code); 3: held messages per slot and the death ledger
# (llm_service/message_ledger.py)
_LAYOUT_VERSION = 3
_HEADER = struct.Struct("<IIII")  # magic, layout version, slots, record size
_RECORDS_AT = 64


class WorkerState(enum.IntEnum):
    """What the worker says it is doing (the supervisor's slot state machine is separate)."""

    EMPTY = 0
    BOOTING = 1
    RUNNING = 2
    PAUSED = 3
    DRAINING = 4
    STOPPED = 5


class Conn(enum.IntEnum):
    UNKNOWN = 0
    UP = 1
    DOWN = 2


class Breaker(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Stage(enum.IntEnum):
    """Where a task in flight is. FREE marks an unused task entry."""

    FREE = 0
    RECEIVED = 1
    READING_INPUT = 2
    CALLING_MODEL = 3
    WRITING_RESULT = 4
    PUBLISHING = 5
    RETRY_WAIT = 6
    WAITING_PLACE = 7  # ready ahead of a place (llm_worker/places.py), not counted in in_flight


# Field name -> struct format. Order is the layout; keep 8-byte fields first for alignment.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("seq", "Q"),
    ("heartbeat", "d"),  # time.monotonic(): CLOCK_MONOTONIC is one clock for all processes on Linux
    ("started_at", "d"),  # wall clock
    ("done", "Q"),
    ("failed", "Q"),
    ("retried", "Q"),
    ("tokens_used", "Q"),
    ("avg_processing_ms", "d"),
    ("last_processing_ms", "d"),
    ("oldest_pending_ts", "d"),  # wall time of the oldest message taken but not committed; 0 if none
    ("kafka_errors", "Q"),  # cumulative; the supervisor derives the per-minute rate
    ("bootstrap_failures", "Q"),  # consecutive; reset when bootstrap succeeds
    # For the Prometheus exporter (docs/metrics.md); cumulative like done/failed.
    ("model_calls", "Q"),  # chat requests answered or failed (a breaker refusal sends none)
    ("model_errors", "Q"),  # of which failed
    ("processing_s_sum", "d"),  # the histogram's sum: seconds of the tasks counted in done
    *((f"processing_bucket_{i}", "Q") for i in range(len(PROCESSING_BUCKETS_S) + 1)),  # not cumulative
    *((f"failed_code_{i}", "Q") for i in range(FAILURE_CODE_COUNTERS)),
    ("pid", "i"),
    ("in_flight", "I"),
    ("capacity", "I"),
    ("state", "B"),
    ("conn_kafka", "B"),
    ("conn_s3", "B"),
    ("conn_gigachat", "B"),
    ("breaker", "B"),
)
_CONTROL: tuple[tuple[str, str], ...] = (
    ("intake_paused", "B"),
    ("drain", "B"),
    ("leave_group", "B"),  # the slot goes away: leave the consumer group on exit (static members don't)
    ("concurrency_cap", "H"),  # 0: no cap beyond WORKER_MAX_CONCURRENT_TASKS
)
_TASK = struct.Struct(f"<dB{TASK_ID_BYTES}s")  # started (wall), stage, task id (utf-8, NUL-padded)


def _offsets(
    fields: tuple[tuple[str, str], ...], start: int
) -> tuple[dict[str, tuple[int, struct.Struct]], int]:
    offsets: dict[str, tuple[int, struct.Struct]] = {}
    pos = start
    for name, fmt in fields:
        packer = struct.Struct("<" + fmt)
        pos += -pos % packer.size  # natural alignment
        offsets[name] = (pos, packer)
        pos += packer.size
    return offsets, pos


_FIELD_AT, _AFTER_FIELDS = _offsets(_FIELDS, 0)
_CONTROL_AT, _AFTER_CONTROL = _offsets(_CONTROL, _AFTER_FIELDS)
_TASKS_AT = _AFTER_CONTROL + (-_AFTER_CONTROL % 8)
_HELD_AT = _TASKS_AT + MAX_TRACKED_TASKS * _TASK.size
RECORD_SIZE = _HELD_AT + held_area_size(MAX_TRACKED_TASKS)
RECORD_SIZE += -RECORD_SIZE % 64  # one record per cache line boundary


class WorkerControl(NamedTuple):
    """What the supervisor asks of one worker (its slot's control area), read several times a turn."""

    intake_paused: bool
    drain: bool
    concurrency_cap: int  # 0: no cap beyond WORKER_MAX_CONCURRENT_TASKS


@dataclass(frozen=True)
class TaskInFlight:
    task_id: str
    stage: Stage
    started: float


@dataclass(frozen=True)
class SlotSnapshot:
    """A consistent copy of one record, as the supervisor reads it."""

    slot: int
    pid: int
    state: WorkerState
    heartbeat: float
    started_at: float
    in_flight: int
    capacity: int
    done: int
    failed: int
    retried: int
    tokens_used: int
    avg_processing_ms: float
    last_processing_ms: float
    oldest_pending_ts: float
    kafka_errors: int
    bootstrap_failures: int
    conn_kafka: Conn
    conn_s3: Conn
    conn_gigachat: Conn
    breaker: Breaker
    intake_paused: bool
    drain: bool
    concurrency_cap: int
    tasks: tuple[TaskInFlight, ...]
    model_calls: int = 0
    model_errors: int = 0
    processing_s_sum: float = 0.0
    processing_buckets: tuple[int, ...] = ()  # per bucket of PROCESSING_BUCKETS_S, then +Inf; not cumulative
    failed_by_code: tuple[int, ...] = ()  # by index of llm_worker.error_codes.COUNTED

    def heartbeat_age(self, now: float | None = None) -> float:
        if self.heartbeat == 0:
            return float("inf")
        return (time.monotonic() if now is None else now) - self.heartbeat


class StatusTable:
    """A table of ``slots`` records in one shared-memory block."""

    def __init__(self, shm: shared_memory.SharedMemory, *, owner: bool) -> None:
        self._shm = shm
        self._owner = owner
        if shm.buf is None:
            raise ValueError(f"shared memory {shm.name} is closed")
        self._buf: memoryview = shm.buf
        magic, version, slots, size = _HEADER.unpack_from(self._buf, 0)
        if magic != _MAGIC or version != _LAYOUT_VERSION or size != RECORD_SIZE:
            raise ValueError(f"shared memory {shm.name} is not a status table of this version")
        self.slots = slots
        self._stuck: dict[int, int] = {}  # reader side: slot -> the odd counter it was found stuck at
        self._ledger_at = _RECORDS_AT + slots * RECORD_SIZE

    @classmethod
    def create(cls, slots: int) -> StatusTable:
        shm = shared_memory.SharedMemory(create=True, size=_RECORDS_AT + slots * RECORD_SIZE + LEDGER_SIZE)
        if shm.buf is None:
            raise ValueError(f"shared memory {shm.name} closed while being created")
        _HEADER.pack_into(shm.buf, 0, _MAGIC, _LAYOUT_VERSION, slots, RECORD_SIZE)
        return cls(shm, owner=True)

    @property
    def name(self) -> str:
        return self._shm.name

    def _base(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} outside 0..{self.slots - 1}")
        return _RECORDS_AT + slot * RECORD_SIZE

    def writer(self, slot: int) -> SlotWriter:
        """The worker side of one slot. Call in the worker process, after fork."""
        base = self._base(slot)
        return SlotWriter(
            self._buf,
            base,
            held=self._held(slot),
            ledger=DeathLedger(self._buf, at=self._ledger_at),
        )

    def held_messages(self, slot: int) -> list[HeldMessage]:
        """The messages a dead worker still held in this slot. Supervisor only, before the slot is cleared."""
        return self._held(slot).read()

    def record_deaths(self, messages: list[HeldMessage]) -> list[tuple[HeldMessage, int]]:
        """One more death for each message (supervisor only); returns each with its count."""
        return DeathLedger(self._buf, at=self._ledger_at).record(messages)

    def _held(self, slot: int) -> HeldMessages:
        return HeldMessages(self._buf, at=self._base(slot) + _HELD_AT, entries=MAX_TRACKED_TASKS)

    def control(self, slot: int) -> SlotControl:
        """The supervisor side of one slot's control area."""
        return SlotControl(self._buf, self._base(slot))

    def clear(self, slot: int) -> None:
        """Zero a slot before a new worker takes it. Supervisor only, while no worker runs there."""
        base = self._base(slot)
        self._buf[base : base + RECORD_SIZE] = bytes(RECORD_SIZE)
        self._stuck.pop(slot, None)  # a new writer counts from 0 and may pass the old stuck value

    def sequence(self, slot: int) -> int:
        """The slot's sequence counter: unchanged since a read means the record is unchanged too.

        Even when no write is under way. The control area is not covered (the supervisor writes it).
        """
        pos, packer = _FIELD_AT["seq"]
        value: int = packer.unpack_from(self._buf, self._base(slot) + pos)[0]
        return value

    def control_values(self, slot: int) -> tuple[bool, bool, int]:
        """The slot's control area as a snapshot shows it: (intake paused, drain, concurrency cap)."""
        base = self._base(slot)
        paused, drain, cap = (
            packer.unpack_from(self._buf, base + pos)[0]
            for pos, packer in (
                _CONTROL_AT["intake_paused"],
                _CONTROL_AT["drain"],
                _CONTROL_AT["concurrency_cap"],
            )
        )
        return bool(paused), bool(drain), int(cap)

    def read(self, slot: int) -> SlotSnapshot:
        """A consistent snapshot of one slot; retries while a write overlaps. Never blocks the writer.

        Fields are read one by one straight from shared memory between two reads of the sequence
        counter. An earlier version copied the whole record with one bytes() call first: a large
        memcpy may use fast-string moves, whose loads x86 does not order the way single loads are,
        and a stress test caught a torn read that way.

        The retries are bounded: a writer that died or raised mid-write leaves the counter odd for
        good, and an unbounded loop here would spin the supervisor in read() forever. A counter that
        stays at one odd value for READ_STUCK_S means the writer is stuck; a counter that keeps moving
        (a busy writer) is retried up to READ_ATTEMPTS. Raises StaleRecordError then, and when a field
        holds a value outside its type (a damaged record); the caller treats the slot as stale. A slot
        found stuck is answered at once on the next reads while its counter has not moved.
        """
        view = self._buf[self._base(slot) : self._base(slot) + RECORD_SIZE]
        try:
            return self._read_consistent(slot, view)
        finally:
            view.release()  # an exception's traceback must not pin the shared memory

    def _read_consistent(self, slot: int, view: memoryview) -> SlotSnapshot:
        seq_at, seq_packer = _FIELD_AT["seq"]
        seq = seq_packer.unpack_from(view, seq_at)[0]
        if self._stuck.get(slot) == seq:
            raise StaleRecordError(
                f"slot {slot}: record still mid-write (sequence {seq}); writer stuck or dead"
            )
        self._stuck.pop(slot, None)
        moved_at = time.monotonic()
        spins = 0  # attempts since the counter last moved
        for _ in range(READ_ATTEMPTS):
            before = seq_packer.unpack_from(view, seq_at)[0]
            spins += 1
            if before != seq:
                seq, moved_at, spins = before, time.monotonic(), 0
            if before % 2 == 0:
                values = _read_values(view)
                if seq_packer.unpack_from(view, seq_at)[0] == before:
                    return _checked_snapshot(slot, *values)
            elif time.monotonic() - moved_at > READ_STUCK_S:
                self._stuck[slot] = before
                break
            # A moving counter is a busy writer: retry at once. One that stays put for READ_SPINS tries
            # belongs to a writer off the CPU (preempted, or dead): nap instead of burning the core.
            time.sleep(0 if spins < READ_SPINS else READ_NAP_S)
        raise StaleRecordError(f"slot {slot}: record stays mid-write (sequence {seq}); writer stuck or dead")

    def close(self) -> None:
        self._shm.close()
        if self._owner:
            self._shm.unlink()


_Values = dict[str, Any]  # what struct unpacked: ints and floats by field


def _read_values(view: memoryview) -> tuple[_Values, _Values, list[tuple[float, int, bytes]]]:
    """The record's raw values, each read on its own; no interpretation until the read is known good."""
    fields = {name: packer.unpack_from(view, pos)[0] for name, (pos, packer) in _FIELD_AT.items()}
    control = {name: packer.unpack_from(view, pos)[0] for name, (pos, packer) in _CONTROL_AT.items()}
    tasks = []
    for i in range(MAX_TRACKED_TASKS):
        pos = _TASKS_AT + i * _TASK.size
        if view[pos + 8] != Stage.FREE:  # the stage byte: most entries are free, skip their 128 bytes
            tasks.append(_TASK.unpack_from(view, pos))
    return fields, control, tasks


def _checked_snapshot(
    slot: int, v: _Values, c: _Values, rows: list[tuple[float, int, bytes]]
) -> SlotSnapshot:
    try:
        return _snapshot(slot, v, c, rows)
    except ValueError as exc:  # an enum field holding a number it does not define
        raise StaleRecordError(f"slot {slot}: record holds a value outside its field: {exc}") from None


def _snapshot(slot: int, v: _Values, c: _Values, rows: list[tuple[float, int, bytes]]) -> SlotSnapshot:
    tasks = tuple(
        TaskInFlight(task_id.rstrip(b"\0").decode("utf-8", "replace"), Stage(stage), started)
        for started, stage, task_id in rows
        if stage != Stage.FREE
    )
    return SlotSnapshot(
        slot=slot,
        pid=v["pid"],
        state=WorkerState(v["state"]),
        heartbeat=v["heartbeat"],
        started_at=v["started_at"],
        in_flight=v["in_flight"],
        capacity=v["capacity"],
        done=v["done"],
        failed=v["failed"],
        retried=v["retried"],
        tokens_used=v["tokens_used"],
        avg_processing_ms=v["avg_processing_ms"],
        last_processing_ms=v["last_processing_ms"],
        oldest_pending_ts=v["oldest_pending_ts"],
        kafka_errors=v["kafka_errors"],
        bootstrap_failures=v["bootstrap_failures"],
        conn_kafka=Conn(v["conn_kafka"]),
        conn_s3=Conn(v["conn_s3"]),
        conn_gigachat=Conn(v["conn_gigachat"]),
        breaker=Breaker(v["breaker"]),
        intake_paused=bool(c["intake_paused"]),
        drain=bool(c["drain"]),
        concurrency_cap=c["concurrency_cap"],
        tasks=tasks,
        model_calls=v["model_calls"],
        model_errors=v["model_errors"],
        processing_s_sum=v["processing_s_sum"],
        processing_buckets=tuple(v[f"processing_bucket_{i}"] for i in range(len(PROCESSING_BUCKETS_S) + 1)),
        failed_by_code=tuple(v[f"failed_code_{i}"] for i in range(FAILURE_CODE_COUNTERS)),
    )


class SlotWriter:
    """Updates one record. Thread-safe within the worker process; one process writes a slot."""

    def __init__(self, buf: memoryview, base: int, *, held: HeldMessages, ledger: DeathLedger) -> None:
        self._buf = buf
        self._base = base
        self.held = held  # the messages this worker runs (for the supervisor, should it die)
        self.ledger = ledger  # how many workers each message killed (read-only here)
        self._lock = threading.Lock()
        self._free_entries = list(range(MAX_TRACKED_TASKS - 1, -1, -1))
        self._seq = _FIELD_AT["seq"][1].unpack_from(buf, base + _FIELD_AT["seq"][0])[0]

    def _begin(self) -> None:
        self._seq += 1
        pos, packer = _FIELD_AT["seq"]
        packer.pack_into(self._buf, self._base + pos, self._seq)

    def _put(self, name: str, value: float | int) -> None:
        pos, packer = _FIELD_AT[name]
        packer.pack_into(self._buf, self._base + pos, value)

    def _get(self, name: str) -> float | int:
        pos, packer = _FIELD_AT[name]
        value: float | int = packer.unpack_from(self._buf, self._base + pos)[0]
        return value

    def update(self, **values: float | int) -> None:
        """Set several fields in one consistent step, e.g. ``update(pid=..., state=WorkerState.RUNNING)``."""
        with self._lock:
            self._begin()
            for name, value in values.items():
                self._put(name, value)
            self._begin()

    def add(self, **deltas: float | int) -> None:
        """Add to counters in one consistent step, e.g. ``add(kafka_errors=1)``."""
        with self._lock:
            self._begin()
            for name, delta in deltas.items():
                self._put(name, self._get(name) + delta)
            self._begin()

    def heartbeat(self) -> None:
        self.update(heartbeat=time.monotonic())

    def task_started(self, task_id: str) -> int:
        """List a task being run; returns its entry for :meth:`task_stage` / :meth:`task_finished`.

        Returns -1 when more tasks run than the table lists. ``in_flight`` counts the tasks holding a
        place instead (:meth:`task_took_place`, :meth:`task_left_place`; llm_worker/places.py).
        """
        with self._lock:
            entry = self._free_entries.pop() if self._free_entries else -1
            self._begin()
            if entry >= 0:
                _TASK.pack_into(
                    self._buf,
                    self._task_pos(entry),
                    time.time(),
                    Stage.RECEIVED,
                    task_id.encode()[:TASK_ID_BYTES],
                )
            self._begin()
            return entry

    def task_stage(self, entry: int, stage: Stage) -> None:
        if entry < 0:
            return
        with self._lock:
            self._begin()
            self._buf[self._task_pos(entry) + 8] = stage  # the stage byte follows the 8-byte start time
            self._begin()

    def task_took_place(self) -> None:
        """A task took a place (llm_worker/places.py): ``in_flight`` counts the tasks holding one, at
        most WORKER_MAX_CONCURRENT_TASKS, as the runbook reads it."""
        with self._lock:
            self._begin()
            self._put("in_flight", int(self._get("in_flight")) + 1)
            self._begin()

    def task_left_place(self) -> None:
        """A task gave its place back: its final status is queued, or it ended (finished or handed
        back). Its entry stays, at stage PUBLISHING, until :meth:`task_finished` or :meth:`task_dropped`."""
        with self._lock:
            self._begin()
            self._put("in_flight", max(0, int(self._get("in_flight")) - 1))
            self._begin()

    def task_finished(
        self,
        entry: int,
        *,
        ok: bool,
        tokens: int = 0,
        processing_ms: float = 0.0,
        code_index: int = -1,
    ) -> None:
        """Unlist a task and count it in the done or failed counters, the averages and the histogram.

        ``code_index`` (a FAILED task's error code, by llm_worker.error_codes.COUNTED) is counted too.
        """
        with self._lock:
            self._begin()
            self._release(entry)
            counter = "done" if ok else "failed"
            finished = int(self._get(counter)) + 1
            self._put(counter, finished)
            if ok:
                self._put("tokens_used", int(self._get("tokens_used")) + tokens)
                avg = float(self._get("avg_processing_ms"))
                self._put("avg_processing_ms", avg + (processing_ms - avg) / finished)
                self._put("last_processing_ms", processing_ms)
                self._observe(processing_ms / 1000.0)
            else:
                self._count_code(code_index)
            self._begin()

    def task_rejected(self, *, code_index: int) -> None:
        """A message that never became a task (invalid): counted as failed, with its error code."""
        with self._lock:
            self._begin()
            self._put("failed", int(self._get("failed")) + 1)
            self._count_code(code_index)
            self._begin()

    def _observe(self, seconds: float) -> None:
        """One processing time into the histogram; inside a write."""
        bucket = next(
            (i for i, le in enumerate(PROCESSING_BUCKETS_S) if seconds <= le), len(PROCESSING_BUCKETS_S)
        )
        name = f"processing_bucket_{bucket}"
        self._put(name, int(self._get(name)) + 1)
        self._put("processing_s_sum", float(self._get("processing_s_sum")) + seconds)

    def _count_code(self, code_index: int) -> None:
        if 0 <= code_index < FAILURE_CODE_COUNTERS:
            name = f"failed_code_{code_index}"
            self._put(name, int(self._get(name)) + 1)

    def task_dropped(self, entry: int) -> None:
        """Unlist a task without an outcome: handed back, or already finished elsewhere."""
        with self._lock:
            self._begin()
            self._release(entry)
            self._begin()

    def _release(self, entry: int) -> None:
        """Free a task entry; inside a write (lock held, seq odd)."""
        if entry >= 0:
            self._buf[self._task_pos(entry) + 8] = Stage.FREE
            self._free_entries.append(entry)

    def _task_pos(self, entry: int) -> int:
        return self._base + _TASKS_AT + entry * _TASK.size

    def control(self) -> WorkerControl:
        """What the supervisor asks of this worker now."""
        return WorkerControl(
            intake_paused=bool(self._control("intake_paused")),
            drain=bool(self._control("drain")),
            concurrency_cap=self._control("concurrency_cap"),
        )

    def leave_requested(self) -> bool:
        """True when the slot is being retired, so the worker should leave its group on the way out."""
        return bool(self._control("leave_group"))

    def _control(self, name: str) -> int:
        pos, packer = _CONTROL_AT[name]
        value: int = packer.unpack_from(self._buf, self._base + pos)[0]
        return value


class SlotControl:
    """The supervisor's requests to one worker, read by the worker on each loop turn."""

    def __init__(self, buf: memoryview, base: int) -> None:
        self._buf = buf
        self._base = base

    def _put(self, name: str, value: int) -> None:
        pos, packer = _CONTROL_AT[name]
        packer.pack_into(self._buf, self._base + pos, value)

    def pause_intake(self, paused: bool) -> None:
        self._put("intake_paused", int(paused))

    def request_drain(self, drain: bool = True) -> None:
        self._put("drain", int(drain))

    def request_leave(self) -> None:
        """Ask the worker to leave the consumer group when it exits (scale-down).

        A static member (group.instance.id) never sends LeaveGroup, so without this its partitions
        would sit idle for the session timeout after the pool shrinks.
        """
        self._put("leave_group", 1)

    def cap_concurrency(self, cap: int) -> None:
        """Limit tasks in flight to ``cap`` (0 lifts the cap)."""
        self._put("concurrency_cap", max(0, min(cap, 0xFFFF)))
