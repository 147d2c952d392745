"""Rebalances that kafka-python 3.0.12 would leave unapplied: wait for a join inside the library.

``BaseCoordinator.join_group_async`` runs the JoinGroup → SyncGroup round trip as a task on the IO
loop and awaits it with the caller's ``poll`` timeout. Only that awaiting coroutine applies the
result (state STABLE, heartbeats on, ``_on_join_complete_async``: the new assignment and our
rebalance listener). If the timeout wins, the task goes on alone and two things can lose its result:

* the next ``poll`` re-awaits an in-flight task only while ``need_rejoin()`` holds, and a leader's
  reason to rejoin (its metadata snapshot changed) is cleared by ``_perform_assignment`` inside that
  very task. Nobody ever applies the result: the member stays REBALANCING with heartbeats off, cannot
  commit, and the broker expels it after the session timeout;
* a task that finished while nobody awaited it is replaced by a fresh JoinGroup on the next entry,
  and a leader's fresh JoinGroup rebalances the whole group again.

So the consumer loop never waits outside kafka-python while a rebalance is under way
(:meth:`JoinGuard.under_way`); it waits in the library's own join (:meth:`JoinGuard.wait`), which
returns as soon as the result is applied. A join can still outlast that wait (the broker holds
JoinGroup until every member has rejoined); then :meth:`JoinGuard.keep_awaited` keeps
``need_rejoin()`` true, so the next wait re-awaits the same task instead of dropping it. What is
left is a task finishing in the microseconds between two waits: kafka-python then joins once more
(logged), which costs one more round but never leaves the member stuck.

It also notices a fence the client keeps to itself: when another process joins with our
``group.instance.id``, the broker answers our next heartbeat FENCED_INSTANCE_ID, and kafka-python's
heartbeat thread only logs it and turns heartbeats off; the member stays STABLE, so ``poll`` never
raises and the fenced worker would go on fetching its old partitions. :meth:`JoinGuard.fenced` tells
the loop, which exits with FENCED like any other fence.

Uses private kafka-python API (``_coordinator``, ``_join_task``, ``_heartbeat_enabled``, ``_lock``):
kafka-python is pinned to >=3.0.12,<3.1 in setup.cfg.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka.structs import MemberState

log = logging.getLogger(__name__)


class JoinGuard:
    """Watches the consumer's group coordinator; created and used on the consumer thread only."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.rejoins = 0  # join results that finished unawaited, so kafka-python joined again

    def _coordinator(self) -> Any:
        return getattr(self._consumer, "_coordinator", None)

    def under_way(self) -> bool:
        """True while this member must join or a join is in flight: wait in :meth:`wait`, nowhere else."""
        coordinator = self._coordinator()
        if coordinator is None:
            return False
        # Exactly what ensure_active_group waits for, so a wait never returns at once and spins the loop.
        return bool(coordinator.need_rejoin() or _unapplied(coordinator) is not None)

    def fenced(self) -> bool:
        """True when a static member is STABLE with heartbeats off and no join under way: only a fence
        leaves it so. A rejoin turns heartbeats off (on this thread, inside poll) while the state is
        still STABLE, but it sets ``rejoining`` first and clears it only with STABLE + heartbeats on."""
        coordinator = self._coordinator()
        if coordinator is None or not getattr(coordinator, "group_instance_id", None):
            return False
        # The join sets STABLE, clears rejoining and turns heartbeats on under this lock: read as one.
        with coordinator._lock:
            return bool(
                coordinator.state is MemberState.STABLE
                and not coordinator._heartbeat_enabled
                and not coordinator.rejoining
                and not coordinator.need_rejoin()
            )

    def wait(self, timeout_ms: int) -> bool:
        """Wait inside kafka-python until the rebalance is applied or ``timeout_ms`` passed; True if joined.

        Raises what ``KafkaConsumer.poll`` would raise for a failed join (FencedInstanceIdError, ...).
        """
        coordinator = self._coordinator()
        if coordinator is None:
            return True
        self.keep_awaited()
        joined = bool(coordinator.ensure_active_group(timeout_ms=timeout_ms))
        self.keep_awaited()
        return joined

    def keep_awaited(self) -> None:
        """Call whenever kafka-python has stopped waiting (after every ``poll``): no join is dropped."""
        coordinator = self._coordinator()
        if coordinator is None:
            return
        task = _unapplied(coordinator)
        if task is None:
            return
        if task.is_done:
            self.rejoins += 1
            log.info("A group join finished while the Kafka client was not waiting for it; joining again")
        # kafka-python awaits an in-flight join (and starts a new one after a finished one) only
        # while need_rejoin() holds; the flag is cleared when a join result is applied.
        coordinator.request_rejoin()


def _unapplied(coordinator: Any) -> Any:
    """The coordinator's join task if its result is not applied yet (in flight, or finished unawaited)."""
    task = getattr(coordinator, "_join_task", None)
    if task is None:
        return None
    if not task.is_done or coordinator.state is MemberState.REBALANCING:
        return task
    return None
