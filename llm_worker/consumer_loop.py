"""The consumer loop: the one thread that owns the KafkaConsumer.

It polls, pauses, resumes and commits; nothing else touches the consumer (it is not thread-safe).
Task threads run the pipeline and hand completions back through :class:`InFlight`. Each loop turn
is short (a poll of at most ``poll_timeout_s`` or a wait of at most ``PAUSED_WAIT_S``; while a
rebalance is under way, a wait for the join of at most ``REBALANCE_WAIT_MS``), so the heartbeat in
the status table keeps beating while tasks run for minutes.

Intake: the loop polls for at most as many records as it has room for (the capacity in places, as
many tasks again getting ready ahead of a place, llm_worker/places.py, and a backlog of capacity /
PREFETCH_SHARE beyond them, started as places free up); when full (or told to pause, or
the model's circuit breaker is open) it pauses every assigned partition and keeps polling, so it
stays in the group. Once full it stays paused until a place is free with nothing queued for it, so
each poll takes a batch rather than one record per finished task. A partition assigned
by a rebalance starts paused (the listener pauses it before anything is fetched), so a paused worker
stays paused across rebalances; the next turn resumes it if intake is open. A spent pool budget
stops intake; a 402/403 pause lets one task through as the probe; tasks of a spent tenant do not
count against the capacity (llm_worker/budget_gate.py). Records that still arrive beyond capacity
wait in the backlog; nothing fetched is lost, and nothing starts while the supervisor pauses intake.

Rebalances: while one is under way the loop never waits outside kafka-python (a join result that
arrives while nobody awaits it is lost, llm_worker/join_guard.py); it waits in the library's join.

Stop: a graceful request stops intake, lets the tasks in flight finish (up to WORKER_DRAIN_TIMEOUT),
commits and returns; a fast request (or the drain deadline) hands the unfinished tasks back
uncommitted, so another worker redelivers them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, FencedInstanceIdError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition

from llm_service import exit_codes
from llm_service.errors import ShutdownRequested
from llm_service.message_ledger import POISON_DEATHS, SUSPECT_DEATHS, HeldMessages
from llm_service.status_table import Breaker, Conn, SlotWriter, WorkerState
from llm_worker.budget_gate import Hold
from llm_worker.delivery_fence import FenceReader
from llm_worker.fetch_guard import clear_drained_records
from llm_worker.inflight import Completion, Held, InFlight, Verdict
from llm_worker.join_guard import JoinGuard
from llm_worker.pipeline import TaskPipeline
from llm_worker.places import Places, Ticket
from llm_worker.rebalance import RebalanceListener, loop_sleep
from llm_worker.task_context import Outcome, Record, TaskContext

log = logging.getLogger(__name__)

PAUSED_WAIT_S = 0.25  # longest wait for a completion while every partition is paused
PAUSED_POLL_EVERY_S = 0.5  # still poll this often while paused: rejoins happen inside poll
PAUSED_POLL_MS = 10  # that poll's timeout: fetches nothing while paused, only keeps the membership
# Longest wait inside kafka-python for a join to complete (it returns as soon as it has): the status
# heartbeat pauses meanwhile, so this stays far below WORKER_HEARTBEAT_TIMEOUT.
REBALANCE_WAIT_MS = 5000
# Beyond its capacity a worker holds up to capacity / PREFETCH_SHARE messages more, taken in one poll
# and started as places free up (none at a capacity under 8, e.g. 1 while the breaker is open).
PREFETCH_SHARE = 8
HAND_BACK_GRACE_S = 3.0  # after the drain deadline: time for tasks to notice and hand back
REVOKE_STEP_S = 0.1


class StopFlags(Protocol):
    """Stop requests noted by the signal handlers (llm_worker.process.Signals)."""

    @property
    def graceful(self) -> bool: ...
    @property
    def fast(self) -> bool: ...


@dataclass(frozen=True)
class Capacity:
    """What the loop may start now (read at most twice a turn)."""

    places: int  # tasks that may hold a place (llm_worker/places.py)
    ahead: int  # tasks that may get ready ahead of a place beside them


@dataclass(frozen=True)
class LoopConfig:
    topic: str
    max_concurrent: int
    drain_timeout_s: float
    revoke_timeout_s: float
    commit_interval_s: float = 1.0
    poll_timeout_s: float = 0.2
    tenant_held_max: int = 0  # tasks of spent tenants held beside max_concurrent (budget_gate.py)


class ConsumerLoop:
    """Consume → run → commit until asked to stop. Construct and run in the worker process's main thread."""

    def __init__(
        self,
        *,
        consumer: KafkaConsumer,
        pipeline: TaskPipeline,
        executor: Executor,
        progress: SlotWriter,
        config: LoopConfig,
        stop: StopFlags,
        breaker_state: Callable[[], Breaker],
        spend_hold: Callable[[], Hold | None] = lambda: None,
        tenant_held: Callable[[], int] = lambda: 0,
        on_turn: Callable[[], None] = lambda: None,
        show_title: Callable[[int, str], None] = lambda busy, note: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._consumer = consumer
        self._pipeline = pipeline
        self._executor = executor
        self._progress = progress
        self._config = config
        self._stop = stop
        self._breaker_state = breaker_state
        self._spend_hold = spend_hold
        self._tenant_held = tenant_held
        self._on_turn = on_turn
        self._show_title = show_title
        self._title = (-1, "")
        self._clock = clock
        self._wall_clock = wall_clock
        self._inflight: InFlight[TopicPartition, ConsumerRecord] = InFlight()
        self._stopping = threading.Event()  # tells task threads to hand back what they hold
        self._draining = threading.Event()  # tells tasks held for a budget to hand back at once
        self._last_commit = 0.0
        self._last_poll = 0.0
        self._stuck = False  # set by the rebalance listener when it collects a STUCK completion
        self._full = False  # intake was blocked last turn (see _intake_blocked)
        self._capacity_now: Capacity | None = None  # this turn's capacity (see _refresh_capacity)
        self._places = Places(
            most_past=config.max_concurrent,
            on_take=progress.task_took_place,
            on_leave=progress.task_left_place,
            on_freed=self._inflight.wake,
        )
        self._join_guard = JoinGuard(consumer)
        self._fences = FenceReader(consumer=consumer, inflight=self._inflight, clock=clock)

    def subscribe(self) -> None:
        self._consumer.subscribe([self._config.topic], listener=RebalanceListener(owner=self))

    def run(self) -> int:
        """Consumer thread: run until a stop request; returns the worker's exit code."""
        try:
            while not (self._stop.graceful or self._stop.fast or self._drain_requested()):
                if self._turn() is Verdict.STUCK or self._stuck:
                    log.error(
                        "A task came back unfinished from a partition this worker still holds; "
                        "restarting the worker so the message is redelivered"
                    )
                    self._finish(exit_codes.CRASHED)
                    return exit_codes.CRASHED
            return self._drain()
        except FencedInstanceIdError as exc:
            log.error(
                "Kafka fenced this worker's group.instance.id (another process uses this slot): %s", exc
            )
            self._inflight.stopping()
            self._stopping.set()
            self._places.wake_all()
            return exit_codes.FENCED

    # --- one turn --------------------------------------------------------------------------------

    def _turn(self) -> Verdict:
        if self._join_guard.fenced():
            raise FencedInstanceIdError("heartbeat fenced: another process joined with our group.instance.id")
        self._progress.heartbeat()
        self._on_turn()
        self._refresh_capacity()  # before the poll, and again after it (the long wait)
        verdict = self._inflight.collect()
        self._commit()
        self._start_tasks()
        paused = self._set_intake()
        records = self._poll(paused)
        self._refresh_capacity()
        self._take(records)
        self._start_tasks()
        self._publish_state()
        return verdict

    def _refresh_capacity(self) -> Capacity:
        """Read how many tasks may run now, and let the places follow it. Twice a turn: it reads the
        control area, the spend gate and the breaker, and was read several times a turn (3-11 % of
        the worker's samples)."""
        self._capacity_now = capacity = self._read_capacity()
        self._places.set_limit(capacity.places)
        return capacity

    def _capacity(self) -> Capacity:
        return self._capacity_now or self._refresh_capacity()

    def _read_capacity(self) -> Capacity:
        cap = self._progress.control().concurrency_cap
        capacity = min(self._config.max_concurrent, cap) if cap > 0 else self._config.max_concurrent
        hold = self._spend_hold()
        if hold is Hold.POOL_BUDGET:
            return Capacity(0, 0)  # the day's budget is spent: the topic waits in Kafka; held tasks wait here
        ahead = capacity  # a wave of tasks finishing together finds as many ready behind it
        if self._breaker_state() is Breaker.OPEN or hold is Hold.PAYMENT:
            capacity, ahead = 1, 0  # one task keeps probing the model; the rest of the topic waits in Kafka
        # Tasks of spent tenants wait in their threads: beside them, the others keep flowing.
        return Capacity(capacity + min(self._tenant_held(), self._config.tenant_held_max), ahead)

    def _claimable(self) -> int:
        """How many tasks may be short of their place: in places, or getting ready ahead of one."""
        capacity = self._capacity()
        return capacity.places + capacity.ahead

    def _room(self) -> int:
        """How many messages the worker may hold short of their place: those and a small backlog."""
        return self._claimable() + self._capacity().places // PREFETCH_SHARE

    def _intake_blocked(self) -> bool:
        held = self._places.claims() + self._inflight.backlog()
        if self._progress.control().intake_paused or held >= self._room():
            blocked = True
        else:
            # Once full, stay paused until a place is free with no message queued for it: the poll
            # that follows takes a batch, where it took one record per completion (a resume, a fetch
            # and a pause per task).
            blocked = self._full and held >= self._claimable()
        self._full = blocked
        return blocked

    def _set_intake(self) -> bool:
        """Pause every assigned partition when no more tasks may start, else resume them; True if paused."""
        blocked = self._intake_blocked()
        if blocked:
            to_pause = self._consumer.assignment() - self._consumer.paused()
            if to_pause:
                self._consumer.pause(*to_pause)
        else:
            paused = self._consumer.paused()
            if paused:
                self._consumer.resume(*paused)
        return blocked

    def _poll(self, paused: bool) -> dict[TopicPartition, list[ConsumerRecord]]:
        if self._join_guard.under_way():
            self._join()  # and nothing else: the next turn applies what the rebalance changed
            return {}
        if paused:
            # Safe to wait out here: no join is in flight, and kafka-python starts one only inside poll.
            self._inflight.wait_completion(PAUSED_WAIT_S)
            if self._clock() - self._last_poll < PAUSED_POLL_EVERY_S:
                return {}
        free = self._room() - self._places.claims() - self._inflight.backlog()
        timeout_ms = PAUSED_POLL_MS if paused else int(self._config.poll_timeout_s * 1000)
        self._last_poll = self._clock()
        clear_drained_records(self._consumer)  # else a partition paused at capacity may never resume
        try:
            records: dict[TopicPartition, list[ConsumerRecord]] = self._consumer.poll(
                timeout_ms=timeout_ms, max_records=max(1, free)
            )
        except FencedInstanceIdError:
            raise
        except KafkaError as exc:
            self._kafka_error("poll", exc)
            return {}
        finally:
            self._join_guard.keep_awaited()  # a join this poll started and gave up waiting for
        self._progress.update(conn_kafka=Conn.UP)
        if not records and self._join_guard.under_way():
            self._join()  # at once: a join that finished in between would be lost to another round
        return records

    def _join(self) -> None:
        """Wait inside kafka-python for the rebalance under way (returns as soon as it is applied)."""
        self._last_poll = self._clock()
        try:
            self._join_guard.wait(REBALANCE_WAIT_MS)
        except FencedInstanceIdError:
            raise
        except KafkaError as exc:
            self._kafka_error("poll", exc)
            return
        self._progress.update(conn_kafka=Conn.UP)

    def _take(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        if not self._join_guard.under_way():
            self._fences.read()  # of partitions new since the last turn
        if not records:
            return
        assigned = self._consumer.assignment()
        now = self._wall_clock()
        for partition, batch in records.items():
            if partition not in assigned:
                continue  # fetched just before a revocation: the new owner will read it
            for record in batch:
                self._inflight.take(partition, record.offset, record, now)

    def _start_tasks(self) -> None:
        if self._progress.control().intake_paused:
            return  # intake paused by the supervisor: held records wait (a drain holds for them too)
        claimable = self._claimable()
        while self._places.claims() < claimable:
            held = self._inflight.next_to_start(run_alone=self._suspect)
            if held is None:
                return
            self._executor.submit(self._run_task, held, self._places.ticket())

    def _deaths(self, held: Held[TopicPartition, ConsumerRecord]) -> int:
        """Workers that died holding this message (the supervisor's death ledger; a shared-memory read)."""
        return self._progress.ledger.deaths(held.partition.topic, held.partition.partition, held.offset)

    def _suspect(self, held: Held[TopicPartition, ConsumerRecord]) -> bool:
        """Killed a worker once: run it alone, so that a second death is charged to it only."""
        return SUSPECT_DEATHS <= self._deaths(held) < POISON_DEATHS

    def _publish_state(self) -> None:
        breaker = self._breaker_state()
        hold = self._spend_hold()
        paused = self._progress.control().intake_paused or breaker is Breaker.OPEN or hold is not None
        oldest = self._inflight.oldest_taken_at()
        self._progress.update(
            state=WorkerState.PAUSED if paused else WorkerState.RUNNING,
            breaker=breaker,
            oldest_pending_ts=oldest or 0.0,
        )
        title = (
            self._places.placed(),
            "breaker open" if breaker is Breaker.OPEN else hold.value if hold else "paused" if paused else "",
        )
        if title != self._title:  # ps shows it; a syscall per change, not per turn
            self._title = title
            self._show_title(*title)

    # --- task threads ----------------------------------------------------------------------------

    def _run_task(self, held: Held[TopicPartition, ConsumerRecord], ticket: Ticket) -> None:
        """Task thread: run one message through the pipeline and report back, whatever happens."""
        record = _as_record(held.record)
        # Noted in shared memory for the supervisor while the message runs: should this process die
        # then, it held this message. Not while it only waits to enter or for a place.
        note = _HeldNote(self._progress.held, record)

        ctx = TaskContext(
            still_owned=lambda: self._inflight.owns(held.partition, held.epoch),
            stopping=self._stopping,
            draining=self._draining,
            revoking=lambda: self._inflight.being_revoked(held.partition),
            place=_TaskPlace(ticket, note),
        )
        outcome = Outcome.HANDED_BACK
        try:
            ticket.enter(ctx)  # a free place, else a turn to get ready ahead of one
            note.start()
            deaths = self._deaths(held)
            if deaths >= POISON_DEATHS:
                outcome = self._pipeline.quarantine(record, ctx, deaths=deaths)
            else:
                first = self._inflight.first_delivery(held)
                outcome = self._pipeline.run(record, ctx, first_delivery=first)
        except ShutdownRequested:
            pass  # stopped, drained or revoked while it waited to enter: handed back
        except Exception:  # the thread boundary: a bug here must surface, not vanish with the thread
            log.exception(
                "Task thread failed on %s[%d]@%d", held.partition.topic, held.partition.partition, held.offset
            )
        finally:
            ticket.close()  # before the completion: the loop then sees the claim gone
            note.finish()
            self._inflight.complete(Completion(held.partition, held.offset, held.epoch, outcome))

    # --- commits ---------------------------------------------------------------------------------

    def _commit(self, *, force: bool = False) -> None:
        """Commit every partition's finished prefix (at most once per commit interval unless forced)."""
        if not force and self._clock() - self._last_commit < self._config.commit_interval_s:
            return
        self._last_commit = self._clock()
        positions = self._inflight.to_commit()
        if not positions:
            return
        offsets = {tp: OffsetAndMetadata(position, "", -1) for tp, position in positions.items()}
        try:
            self._consumer.commit(offsets=offsets)
        except FencedInstanceIdError:
            raise
        except (RebalanceInProgressError, CommitFailedError) as exc:
            # Normal while workers join or leave: the next turn commits again, with the new generation.
            log.info("Commit postponed by a rebalance: %s", exc)
            return
        except KafkaError as exc:
            self._kafka_error("commit", exc)  # retried next turn; at worst the messages are redelivered
            return
        self._inflight.committed(positions)

    def _kafka_error(self, what: str, exc: KafkaError) -> None:
        log.warning("Kafka %s failed: %s", what, exc)
        self._progress.add(kafka_errors=1)
        self._progress.update(conn_kafka=Conn.DOWN)

    # --- stopping --------------------------------------------------------------------------------

    def _drain_requested(self) -> bool:
        return self._progress.control().drain

    def _drain(self) -> int:
        """Graceful stop: no new tasks; finish the running ones until the drain deadline; commit."""
        self._inflight.collect()
        running = self._inflight.running()
        log.info(
            "Draining: taking no new tasks; waiting up to %.0fs for %d in flight",
            self._config.drain_timeout_s,
            running,
        )
        self._progress.update(state=WorkerState.DRAINING)
        self._draining.set()
        self._places.wake_all()  # tasks waiting for a place or a turn hand back now
        self._pause_all()
        self._inflight.drop_backlog(self._consumer.assignment())
        deadline = self._clock() + self._config.drain_timeout_s
        while self._inflight.running() > 0 and self._clock() < deadline and not self._stop.fast:
            self._progress.heartbeat()
            if not self._join_guard.under_way():  # else _keep_membership waits in the join instead
                self._inflight.wait_completion(PAUSED_WAIT_S)
            self._inflight.collect()
            self._commit()
            self._keep_membership()
        if self._inflight.running() > 0:
            step = "fast stop requested" if self._stop.fast else "drain deadline passed"
            log.warning("%s: handing back %d unfinished tasks", step, self._inflight.running())
        return self._finish(exit_codes.OK)

    def _finish(self, code: int) -> int:
        """Hand back what still runs, commit what finished; the caller closes the clients."""
        self._inflight.stopping()
        self._stopping.set()
        self._places.wake_all()
        grace_until = self._clock() + HAND_BACK_GRACE_S
        while self._inflight.running() > 0 and self._clock() < grace_until:
            self._progress.heartbeat()
            self._inflight.wait_completion(0.1)
            self._inflight.collect()
        self._inflight.collect()
        self._commit(force=True)
        self._progress.update(state=WorkerState.STOPPED)
        return code

    def _pause_all(self) -> None:
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)

    def _keep_membership(self) -> None:
        """Poll now and then while draining: a rebalance can only complete inside poll."""
        if self._join_guard.under_way():
            self._join()  # partitions it assigns start paused (partitions_assigned)
            return
        if self._clock() - self._last_poll < PAUSED_POLL_EVERY_S:
            return
        self._pause_all()
        self._last_poll = self._clock()
        try:
            records = self._consumer.poll(timeout_ms=PAUSED_POLL_MS, max_records=1)
        except FencedInstanceIdError:
            raise
        except KafkaError as exc:
            self._kafka_error("poll", exc)
            return
        finally:
            self._join_guard.keep_awaited()
        if not records and self._join_guard.under_way():
            self._join()
        if records:
            self._take(records)  # held, never started: stays uncommitted for the next owner
            self._inflight.drop_backlog(records)

    # --- the rebalance listener's side (kafka-python's IO thread) ---------------------------------

    async def partitions_revoked(self, partitions: list[TopicPartition]) -> None:
        """Let the partitions' running tasks finish (up to WORKER_REVOKE_TIMEOUT_S), commit, give them up."""
        dropped = self._inflight.drop_backlog(partitions)
        self._inflight.revoking(partitions)
        self._places.wake_all()  # their tasks that wait for a place or a turn hand back now
        wait_s = 0.0 if self._stopping.is_set() else self._config.revoke_timeout_s
        deadline = self._clock() + wait_s
        while self._inflight.running(partitions) > 0 and self._clock() < deadline:
            self._note(self._inflight.collect())
            self._progress.heartbeat()  # the consumer thread is blocked in poll meanwhile
            await loop_sleep(self._consumer, REVOKE_STEP_S)
        self._note(self._inflight.collect())
        positions = self._inflight.to_commit(partitions)
        handed_back = self._inflight.running(partitions)
        self._inflight.forget(partitions)
        if positions:
            await self._commit_from_listener(positions)
        log.info(
            "Partitions revoked: %s; %d queued and %d running tasks handed back",
            ", ".join(f"{p.topic}[{p.partition}]" for p in partitions),
            dropped,
            handed_back,
        )

    async def _commit_from_listener(self, positions: dict[TopicPartition, int]) -> None:
        offsets = {tp: OffsetAndMetadata(position, "", -1) for tp, position in positions.items()}
        try:
            await self._consumer.commit_async(offsets=offsets)
        except KafkaError as exc:
            log.warning("Commit of revoked partitions failed (their tasks will be redelivered): %s", exc)
            self._progress.add(kafka_errors=1)

    def partitions_lost(self, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: drop everything of these partitions, commit nothing."""
        self._note(self._inflight.collect())
        self._inflight.forget(partitions)

    def partitions_assigned(self, partitions: list[TopicPartition]) -> None:
        """New partitions start paused, before anything is fetched from them (kafka-python assigns them
        unpaused): a drained worker stays drained across a rebalance, and a worker that is full takes
        nothing more. The consumer thread's next turn reads their fence
        (llm_worker/delivery_fence.py) and resumes them when intake is open."""
        self._consumer.pause(*partitions)  # the consumer thread is blocked in poll while this runs
        self._inflight.assigned(partitions)  # the ownership starts; its fence is read next turn

    def _note(self, verdict: Verdict) -> None:
        if verdict is Verdict.STUCK:
            self._stuck = True


class _HeldNote:
    """One message's entry in the slot's held messages (llm_service/message_ledger.py), on and off."""

    def __init__(self, held: HeldMessages, record: Record) -> None:
        self._held = held
        self._record = record
        self._entry: int | None = None

    def start(self) -> None:
        if self._entry is None:
            self._entry = self._held.start(self._record.topic, self._record.partition, self._record.offset)

    def finish(self) -> None:
        if self._entry is not None:
            self._held.finish(self._entry)
            self._entry = None


class _TaskPlace:
    """A task's ticket as its TaskContext sees it; the message is off the death ledger while it waits."""

    def __init__(self, ticket: Ticket, note: _HeldNote) -> None:
        self._ticket = ticket
        self._note = note

    @property
    def placed(self) -> bool:
        return self._ticket.placed

    def take(self, ctx: TaskContext) -> None:
        if self._ticket.placed:
            return
        self._note.finish()
        try:
            self._ticket.take_place(ctx)
        finally:
            self._note.start()

    def release(self) -> bool:
        return self._ticket.release()

    def under_way(self) -> None:
        self._ticket.under_way()

    def give_way(self) -> None:
        self._ticket.give_way()


def _as_record(record: Any) -> Record:
    return Record(record.topic, record.partition, record.offset, record.key, record.value)
