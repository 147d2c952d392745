"""The pool: slots, their processes, and every decision about starting, stopping and replacing them.

Runs in the supervisor process, called from the main loop (:mod:`supervisor.arbiter`). Everything
it does to processes goes through the :class:`~supervisor.spawn.ProcessOps` seam and every time it
reads comes from the injected clock, so the tests drive it with fakes: no fork, no sleep.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Callable
from typing import NamedTuple

from llm_service.config import Settings
from llm_service.errors import StaleRecordError
from llm_service.instance_id import instance_prefix
from llm_service.message_ledger import POISON_DEATHS
from llm_service.signals import DUMP_SIGNAL
from llm_service.status_table import SlotSnapshot, StatusTable, WorkerState
from supervisor.backoff import BackoffPolicy, ExitInfo, Verdict
from supervisor.slot import Slot, SlotState, StopReason
from supervisor.spawn import Clock, ProcessOps, SpawnRequest
from supervisor.totals import CounterBook

log = logging.getLogger(__name__)

_REPLACE_AT_ONCE = frozenset({StopReason.RECYCLE, StopReason.RELOAD, StopReason.RSS_HARD})
_NOT_REPLACED = frozenset({StopReason.SCALE_DOWN, StopReason.SHUTDOWN})
# Deaths a message may have caused: unasked ones, and kills for a hang or a runaway RSS. A kill at a
# drain or stop deadline is not the message's doing (a slow call), nor is an exit with a code.
_DEATH_BY_MESSAGE = frozenset({StopReason.NONE, StopReason.HUNG, StopReason.RSS_HARD})


def backoff_policy(settings: Settings, rand: Callable[[], float]) -> BackoffPolicy:
    return BackoffPolicy(
        base_s=settings.worker_restart_backoff_s,
        max_s=settings.worker_restart_backoff_max_s,
        max_quick_failures=settings.worker_max_quick_failures,
        min_uptime_s=settings.worker_min_uptime_s,
        cooloff_s=settings.worker_fatal_cooloff_s,
        rand=rand,
    )


class Control(NamedTuple):
    """What every worker is told through its slot's control area (the pool-wide part of it)."""

    intake_paused: bool
    concurrency_cap: int  # 0: no cap


STALE_WARN_READS = 4  # about a second of loop turns: one preempted writer is not worth a warning


class Pool:
    """All slots of the status table; the first ``wanted`` of them should run a worker."""

    def __init__(
        self,
        *,
        settings: Settings,
        table: StatusTable,
        ops: ProcessOps,
        clock: Clock,
        hostname: str,
        rand: Callable[[], float],
        in_child: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.slots = [
            Slot(index=i, hostname=hostname, instance_prefix=settings.worker_instance_prefix)
            for i in range(table.slots)
        ]
        self.wanted: int = min(settings.worker_processes, table.slots)
        self.generation = 0
        self.stopping = False
        self.deaths = 0  # exits nobody asked for
        self.tasks_interrupted = 0  # tasks in flight in workers that died (Kafka redelivers them)
        self.unclean_stop = False  # a worker was killed or failed while the supervisor stopped
        self.counters = CounterBook()  # task counters of records already cleared (the exporter's totals)
        self._table = table
        self._ops = ops
        self._clock = clock
        self._rand = rand
        self._in_child = in_child
        self._by_pid: dict[int, Slot] = {}
        self._control = Control(intake_paused=False, concurrency_cap=0)
        self._roll_halted = False
        self._last_good: dict[int, SlotSnapshot] = {}  # a stale record is judged by its last good read
        # The sequence counter each last good read started from: unchanged (and even), the record is
        # too, and the read (a copy of ~100 fields and 128 task entries) is skipped.
        self._seen: dict[int, int] = {}
        self.stale: dict[int, int] = {}  # slot -> consecutive reads that found its record stale

    # --- what the loop asks about -------------------------------------------------------------------

    def wanted_slots(self) -> list[Slot]:
        return self.slots[: self.wanted]

    def live_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.live]

    def pids(self) -> list[int]:
        return [s.pid for s in self.slots if s.live]

    def all_down(self) -> bool:
        return not self.live_slots()

    def read(self) -> dict[int, SlotSnapshot]:
        """The table records of live workers, by slot index (lock-free, bounded reads)."""
        snaps = {s.index: self.read_slot(s.index) for s in self.slots if s.live}
        return {index: snap for index, snap in snaps.items() if snap is not None}

    def read_slot(self, index: int) -> SlotSnapshot | None:
        """One slot's record, or when it is stale (writer stuck or dead mid-write) its last good one.

        A stale record's last heartbeat ages, so a writer that never finishes its write is judged
        hung after WORKER_HEARTBEAT_TIMEOUT and replaced, like any silent worker.
        """
        seq = self._table.sequence(index)
        cached = self._last_good.get(index)
        if cached is not None and seq % 2 == 0 and self._seen.get(index) == seq:
            return self._with_control(index, cached)  # nothing written since: no copy to make
        try:
            snap = self._table.read(index)
        except StaleRecordError as exc:
            streak = self.stale.get(index, 0) + 1
            self.stale[index] = streak
            if streak == STALE_WARN_READS:
                log.warning(
                    "Worker %d: status record unreadable (%s); using its last good reading", index, exc
                )
            return self._last_good.get(index)
        self.stale.pop(index, None)
        self._last_good[index] = snap
        self._seen[index] = seq  # the counter before the read: a write since then reads again next time
        return snap

    def _with_control(self, index: int, snap: SlotSnapshot) -> SlotSnapshot:
        """A cached record with the control area as it is now (we write it outside the counter)."""
        paused, drain, cap = self._table.control_values(index)
        if (paused, drain, cap) == (snap.intake_paused, snap.drain, snap.concurrency_cap):
            return snap
        snap = dataclasses.replace(snap, intake_paused=paused, drain=drain, concurrency_cap=cap)
        self._last_good[index] = snap
        return snap

    # --- starting ----------------------------------------------------------------------------------

    def spawn(self, slot: Slot) -> None:
        """Start a worker in ``slot`` with the current settings (from STOPPED, BACKOFF, FATAL or an exit)."""
        now = self._clock.monotonic()
        self.counters.fold(self._table.read(slot.index))  # the old worker's counts outlive its record
        self._table.clear(slot.index)
        self._last_good.pop(slot.index, None)
        self._seen.pop(slot.index, None)  # the new writer counts from 0 again
        self.stale.pop(slot.index, None)
        self._write_control(slot)
        request = SpawnRequest(
            slot=slot.index,
            settings=self.settings,
            hostname=slot.hostname,
            group_instance_id=slot.group_instance_id,
        )
        try:
            pid = self._ops.spawn(request, in_child=self._in_child)
        except OSError as exc:
            log.error("Cannot fork a worker for slot %d: %s; retrying later", slot.index, exc)
            slot.pid = 0
            slot.retry_at = now + self.settings.worker_restart_backoff_s
            if slot.state is not SlotState.BACKOFF:
                slot.move(SlotState.BACKOFF, now)
            return
        if slot.spawned_at:
            slot.restarts += 1
        slot.pid, slot.spawned_at, slot.generation = pid, now, self.generation
        slot.stop_reason, slot.deadline, slot.reached_running, slot.sigkilled = (
            StopReason.NONE,
            0.0,
            False,
            False,
        )
        slot.max_tasks = self._max_tasks_target()
        self._by_pid[pid] = slot
        slot.move(SlotState.STARTING, now)
        log.info("Worker %d starting: pid %d, group_instance_id %s", slot.index, pid, slot.group_instance_id)

    def _max_tasks_target(self) -> int:
        base = self.settings.worker_max_tasks
        # Jitter (up to 10 %) so that workers started together are not all recycled together.
        return base + int(self._rand() * (base // 10 + 1)) if base else 0

    def fill(self) -> None:
        """Start wanted slots that have no process and whose wait (if any) is over."""
        if self.stopping:
            return
        now = self._clock.monotonic()
        for slot in self.wanted_slots():
            if slot.state is SlotState.STOPPED:
                self.spawn(slot)
            elif slot.state in (SlotState.BACKOFF, SlotState.FATAL) and now >= slot.retry_at:
                if slot.state is SlotState.FATAL:
                    log.warning("Worker %d: cool-off over, trying again", slot.index)
                self.spawn(slot)

    def trim(self) -> None:
        """Stop slots beyond the wanted size: drain their workers, forget their waits."""
        now = self._clock.monotonic()
        for slot in self.slots[self.wanted :]:
            if slot.state in (SlotState.BACKOFF, SlotState.FATAL, SlotState.CONFLICT):
                slot.move(SlotState.STOPPED, now)
            elif slot.state in (SlotState.STARTING, SlotState.RUNNING):
                self.drain(slot, StopReason.SCALE_DOWN)
            elif slot.state is SlotState.DRAINING:
                slot.stop_reason = StopReason.SCALE_DOWN

    def resize(self, n: int) -> int:
        """Set the pool size (clamped to the table); fill() and trim() on the next loop turn act on it."""
        self.wanted = max(0, min(n, len(self.slots)))
        return self.wanted

    def retry_failed_now(self) -> None:
        """After a good reload: slots waiting in BACKOFF or FATAL may work with the new config."""
        for slot in self.slots:
            if slot.state in (SlotState.BACKOFF, SlotState.FATAL):
                slot.retry_at = 0.0
                slot.quick_failures = 0

    # --- stopping ----------------------------------------------------------------------------------

    def drain(self, slot: Slot, reason: StopReason, deadline: float | None = None) -> None:
        """Polite stop: SIGTERM (and the control area's drain flag); the worker finishes in-flight tasks."""
        now = self._clock.monotonic()
        control = self._table.control(slot.index)
        if reason is StopReason.SCALE_DOWN:
            control.request_leave()  # nobody takes this identity back: hand the partitions over now
        control.request_drain()
        self._ops.kill(slot.pid, signal.SIGTERM)
        slot.stop_reason = reason
        slot.deadline = deadline if deadline is not None else now + self.settings.worker_drain_timeout
        slot.move(SlotState.DRAINING, now)
        log.info("Worker %d (pid %d) draining: %s", slot.index, slot.pid, reason.value)

    def force(
        self, slot: Slot, reason: StopReason, sig: int = signal.SIGKILL, deadline: float | None = None
    ) -> None:
        """Forced stop: SIGQUIT (fast stop) or SIGKILL; SIGKILL follows at the deadline if still needed."""
        now = self._clock.monotonic()
        self._ops.kill(slot.pid, sig)
        slot.sigkilled = slot.sigkilled or sig == signal.SIGKILL
        slot.stop_reason = reason
        slot.deadline = deadline if deadline is not None else now + self.settings.worker_kill_grace_s
        if slot.state is not SlotState.STOPPING:
            slot.move(SlotState.STOPPING, now)

    def hang(self, slot: Slot, silent_for: float, snapshot: SlotSnapshot | None) -> None:
        """A silent worker: traceback dump first (faulthandler), then SIGTERM, SIGKILL after the grace."""
        log.error(
            "Worker %d (pid %d) sent no heartbeat for %.1f s (WORKER_HEARTBEAT_TIMEOUT=%s); "
            "dumping its traceback and stopping it; %s",
            slot.index,
            slot.pid,
            silent_for,
            self.settings.worker_heartbeat_timeout,
            describe_tasks(snapshot),
        )
        self._ops.kill(slot.pid, DUMP_SIGNAL)
        self.force(slot, StopReason.HUNG, signal.SIGTERM)
        self._ops.kill(slot.pid, signal.SIGCONT)  # a SIGSTOPped worker can only dump and exit once continued

    def stop_all(self, *, fast: bool, deadline: float) -> None:
        """Stop every worker (graceful: SIGTERM; fast: SIGQUIT); SIGKILL at the one deadline."""
        self.stopping = True
        now = self._clock.monotonic()
        for slot in self.slots:
            if slot.state in (SlotState.BACKOFF, SlotState.FATAL, SlotState.CONFLICT):
                slot.move(SlotState.STOPPED, now)
            elif slot.state in (SlotState.STARTING, SlotState.RUNNING) and not fast:
                self.drain(slot, StopReason.SHUTDOWN, deadline)
            elif slot.live and fast:
                self.force(slot, StopReason.SHUTDOWN, signal.SIGQUIT, deadline)
            elif slot.live:
                slot.stop_reason, slot.deadline = StopReason.SHUTDOWN, min(slot.deadline, deadline)

    def kill_all(self) -> None:
        for slot in self.live_slots():
            self.force(slot, StopReason.SHUTDOWN if self.stopping else slot.stop_reason)

    def escalate(self) -> None:
        """Past its deadline: a draining worker is killed; a stopping one gets SIGKILL (again)."""
        now = self._clock.monotonic()
        for slot in self.slots:
            if slot.state not in (SlotState.DRAINING, SlotState.STOPPING) or now < slot.deadline:
                continue
            log.warning(
                "Worker %d (pid %d) still running at its %s deadline; SIGKILL",
                slot.index,
                slot.pid,
                slot.stop_reason.value,
            )
            self.force(slot, slot.stop_reason)

    # --- watching ----------------------------------------------------------------------------------

    def observe(self, snapshots: dict[int, SlotSnapshot]) -> None:
        """STARTING -> RUNNING once the worker itself reports RUNNING (or PAUSED) with our pid."""
        now = self._clock.monotonic()
        for slot in self.slots:
            snap = snapshots.get(slot.index)
            if slot.state is not SlotState.STARTING or snap is None or snap.pid != slot.pid:
                continue
            if snap.state in (WorkerState.RUNNING, WorkerState.PAUSED):
                slot.reached_running = True
                slot.boot_failures = 0
                slot.move(SlotState.RUNNING, now)
                log.info(
                    "Worker %d (pid %d) running, %.2f s after start",
                    slot.index,
                    slot.pid,
                    now - slot.spawned_at,
                )

    def check_heartbeats(self, snapshots: dict[int, SlotSnapshot]) -> None:
        """The parent judges liveness: no heartbeat for WORKER_HEARTBEAT_TIMEOUT -> dump, TERM, KILL."""
        now = self._clock.monotonic()
        for slot in self.slots:
            if slot.state not in (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING):
                continue
            snap = snapshots.get(slot.index)
            beat = snap.heartbeat if snap is not None and snap.pid == slot.pid else 0.0
            silent = now - max(beat, slot.spawned_at)
            if silent > self.settings.worker_heartbeat_timeout:
                self.hang(slot, silent, snap)

    def set_control(self, *, intake_paused: bool, concurrency_cap: int) -> None:
        """What every worker should obey now; written to each slot's control area."""
        self._control = Control(intake_paused=intake_paused, concurrency_cap=concurrency_cap)
        for slot in self.slots:
            if slot.live:
                self._write_control(slot)

    def _write_control(self, slot: Slot) -> None:
        control = self._table.control(slot.index)
        control.pause_intake(self._control.intake_paused)
        control.cap_concurrency(self._control.concurrency_cap)

    # --- exits -------------------------------------------------------------------------------------

    def on_exit(self, pid: int, status: int) -> bool:
        """A reaped child. Returns False when it was not one of our workers."""
        slot = self._by_pid.pop(pid, None)
        if slot is None:
            return False
        info = ExitInfo.from_status(status)
        now = self._clock.monotonic()
        record = self.read_slot(slot.index)
        self._report_exit(slot, info, record, now - slot.spawned_at)
        if info.signal is not None and slot.stop_reason in _DEATH_BY_MESSAGE:
            self._count_deaths(slot)
        if info.boot_failure:
            own = record.bootstrap_failures if record is not None and record.pid == slot.pid else 0
            slot.boot_failures = max(slot.boot_failures + 1, own)
        if self.stopping and not (info.clean and not slot.sigkilled):
            self.unclean_stop = True
        if self.stopping or slot.stop_reason in _NOT_REPLACED or slot.index >= self.wanted:
            slot.move(SlotState.STOPPED, now)
        elif info.fenced:
            self._stop_fenced(slot, now)
        elif slot.stop_reason in _REPLACE_AT_ONCE:
            self.spawn(slot)
        else:
            self._restart_after_failure(slot, info, now)
        return True

    def _count_deaths(self, slot: Slot) -> None:
        """Charge the worker's death to each message it held (the death ledger, read by all workers)."""
        held = self._table.held_messages(slot.index)
        if not held:
            return
        for message, deaths in self._table.record_deaths(held):
            log.warning(
                "Worker %d (pid %d) died holding partition %d offset %d: %d death(s) for that message%s",
                slot.index,
                slot.pid,
                message.partition,
                message.offset,
                deaths,
                "; its next delivery is quarantined (POISON)" if deaths >= POISON_DEATHS else "",
            )

    def _stop_fenced(self, slot: Slot, now: float) -> None:
        """Fenced: another process joined with this slot's identity. Restarting would fence it in turn,
        and the two would expel each other in a loop, so the slot stops (the instance_conflict alert)."""
        slot.move(SlotState.CONFLICT, now)
        log.error(
            "Worker %d stopped, not restarted: Kafka fenced its group_instance_id %s because another "
            "process in group %s uses it (a second supervisor with WORKER_INSTANCE_PREFIX=%s?)",
            slot.index,
            slot.group_instance_id,
            self.settings.kafka_group_id,
            instance_prefix(slot.instance_prefix, slot.hostname),
        )

    def _restart_after_failure(self, slot: Slot, info: ExitInfo, now: float) -> None:
        policy = backoff_policy(self.settings, self._rand)
        decision = policy.decide(
            info=info,
            uptime=now - slot.spawned_at,
            reached_running=slot.reached_running,
            quick_failures=slot.quick_failures,
        )
        slot.quick_failures = decision.quick_failures
        if decision.verdict is Verdict.RESTART:
            self.spawn(slot)
            return
        slot.retry_at = now + decision.delay
        if decision.verdict is Verdict.BACKOFF:
            slot.move(SlotState.BACKOFF, now)
            log.warning(
                "Worker %d failed %d times in a row; next start in %.1f s",
                slot.index,
                decision.quick_failures,
                decision.delay,
            )
        else:
            slot.move(SlotState.FATAL, now)
            log.error(
                "Worker %d is FATAL after %d quick failures (last: %s); trying again in %.0f s",
                slot.index,
                decision.quick_failures,
                slot.last_exit,
                decision.delay,
            )

    def _report_exit(self, slot: Slot, info: ExitInfo, snap: SlotSnapshot | None, uptime: float) -> None:
        """Log how the worker ended and what it held; count deaths nobody asked for."""
        slot.last_exit = info.describe()
        held = snap if snap is not None and snap.pid == slot.pid else None
        if slot.stop_reason is not StopReason.NONE and info.clean:
            log.info(
                "Worker %d (pid %d) exited after %s (%s, up %.1f s)",
                slot.index,
                slot.pid,
                slot.stop_reason.value,
                slot.last_exit,
                uptime,
            )
            return
        if slot.stop_reason is StopReason.NONE:
            self.deaths += 1
        interrupted = held.in_flight if held is not None else 0
        self.tasks_interrupted += interrupted
        log.error(
            "Worker %d (pid %d) %s after %.1f s (%s); %s",
            slot.index,
            slot.pid,
            slot.last_exit,
            uptime,
            slot.stop_reason.value if slot.stop_reason is not StopReason.NONE else "unexpected",
            describe_tasks(held),
        )

    # --- rolling restart after a reload ----------------------------------------------------------

    def start_rolling(self) -> None:
        self.generation += 1
        self._roll_halted = False

    def roll(self) -> bool:
        """Replace old-generation workers one at a time. True when none is left (or we stop)."""
        if self.stopping:
            return True
        wanted = self.wanted_slots()
        if any(
            s.generation == self.generation and s.state in (SlotState.BACKOFF, SlotState.FATAL)
            for s in wanted
        ):
            if not self._roll_halted:
                log.error(
                    "Rolling restart halted: a worker with the new config does not start; "
                    "the others keep running with the old one"
                )
                self._roll_halted = True
            return False
        busy = any(
            s.state is SlotState.STARTING or s.stop_reason is StopReason.RELOAD for s in wanted if s.live
        )
        old = [s for s in wanted if s.live and s.generation < self.generation]
        if busy or not old:
            return not busy and not old
        slot = next((s for s in old if s.state is SlotState.RUNNING), None)
        if slot is not None:
            log.info(
                "Rolling restart: replacing worker %d (%d left with the old config)", slot.index, len(old)
            )
            self.drain(slot, StopReason.RELOAD)
        return False


def describe_tasks(snap: SlotSnapshot | None) -> str:
    """'it held 2 task(s) in flight: a-1 (CALLING_MODEL), a-2 (RECEIVED)' for logs about a worker."""
    if snap is None or not snap.in_flight:
        return "it held no tasks in flight"
    tasks = ", ".join(f"{t.task_id} ({t.stage.name})" for t in snap.tasks[:20])
    more = (
        f" and {snap.in_flight - len(snap.tasks[:20])} more" if snap.in_flight > len(snap.tasks[:20]) else ""
    )
    return f"it held {snap.in_flight} task(s) in flight: {tasks}{more}"
