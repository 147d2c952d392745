"""A guard against a kafka-python 3.0.12 bug that leaves a finished rebalance unapplied.

``BaseCoordinator.join_group_async`` runs the JoinGroup → SyncGroup round trip as a task on the IO
loop and awaits it with the caller's ``poll`` timeout. When the timeout expires first, the task goes
on alone; only the awaiting coroutine applies its result (state STABLE, heartbeats on again,
``_on_join_complete_async``: the new assignment and the rebalance listener). The next ``poll``
re-enters ``join_group_async`` only if ``need_rejoin()`` is still true. When the rejoin was requested
because the leader's metadata snapshot changed (the usual case for the first member of a fresh group:
it assigned before it knew the topic's partitions), ``_perform_assignment`` inside that very task
clears the reason, so nobody ever applies the result: the member stays REBALANCING with heartbeats
off, keeps fetching its old partitions, every commit fails with RebalanceInProgressError, and the
broker expels it after the session timeout (docs/worker.md, "Rebalances").

The guard runs on the consumer thread right after each ``poll``: if the join task is done but the
member is still REBALANCING, the result is orphaned, so it requests a rejoin; the next ``poll`` then
joins again (a fresh JoinGroup) and applies that round. It also tells the loop when a rebalance is
under way, so the loop polls long enough for a join to finish while it waits (``REBALANCE_POLL_MS``).

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

REBALANCE_POLL_MS = 500  # poll timeout while a rebalance is under way (instead of 10 ms while paused)


class JoinGuard:
    """Watches the consumer's group coordinator; created and used on the consumer thread only."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.rejoins = 0  # orphaned join results found (and rejoined)

    def _coordinator(self) -> Any:
        return getattr(self._consumer, "_coordinator", None)

    def rebalancing(self) -> bool:
        """True while the member is joining or must join: poll long enough for the join to finish."""
        coordinator = self._coordinator()
        if coordinator is None:
            return False
        return bool(coordinator.state is not MemberState.STABLE or coordinator.need_rejoin())

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

    def after_poll(self) -> bool:
        """Call right after ``poll`` returned; returns True if an orphaned join result was found."""
        coordinator = self._coordinator()
        if coordinator is None:
            return False
        task = getattr(coordinator, "_join_task", None)
        if task is None or not task.is_done or coordinator.state is not MemberState.REBALANCING:
            return False
        # poll has returned, so no join_group_async awaits this task any more: its result is lost.
        self.rejoins += 1
        log.warning(
            "The Kafka client finished a rebalance after poll gave up waiting and never applied it "
            "(kafka-python join_group_async); rejoining the group"
        )
        coordinator.request_rejoin()
        return True
