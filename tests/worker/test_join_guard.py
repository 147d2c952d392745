"""Keeping kafka-python awaiting a join until its result is applied (llm_worker/join_guard.py).

The fake coordinator has the fields and methods the guard reads, with kafka-python's meaning:
``rejoin_needed`` gates ``ensure_active_group`` (and the join inside ``poll``); ``_join_task`` is the
JoinGroup → SyncGroup task, left set while its result is unapplied. The real race is exercised by
tests/worker/test_rebalance.py on the real broker.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pytest
from kafka.future import Future
from kafka.structs import MemberState

from llm_worker.join_guard import JoinGuard


@dataclass
class FakeCoordinator:
    state: str = MemberState.STABLE
    rejoin_needed: bool = False
    _join_task: Future | None = None
    joined: bool = True
    waits: list[tuple[int, bool]] = field(default_factory=list)  # (timeout, need_rejoin at entry)
    group_instance_id: str | None = "llm-worker-h-0"
    _heartbeat_enabled: bool = True
    rejoining: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def need_rejoin(self) -> bool:
        return self.rejoin_needed

    def request_rejoin(self) -> None:
        self.rejoin_needed = True

    def ensure_active_group(self, timeout_ms: int) -> bool:
        self.waits.append((timeout_ms, self.rejoin_needed))
        return self.joined


@dataclass
class FakeConsumer:
    _coordinator: FakeCoordinator


def guard(coordinator: FakeCoordinator) -> JoinGuard:
    return JoinGuard(FakeConsumer(coordinator))


def test_a_join_in_flight_after_poll_stays_awaited() -> None:
    # The leader's case: _perform_assignment cleared its reason to rejoin inside the task, so
    # kafka-python would never await the task again. The guard keeps need_rejoin() true.
    coordinator = FakeCoordinator(state=MemberState.REBALANCING, _join_task=Future())
    join_guard = guard(coordinator)
    assert join_guard.under_way()
    join_guard.keep_awaited()
    assert coordinator.need_rejoin()
    assert join_guard.rejoins == 0


def test_a_join_task_not_started_yet_counts_as_in_flight() -> None:
    # Scheduled but not run: the state is still STABLE; the task may clear need_rejoin() later.
    coordinator = FakeCoordinator(_join_task=Future())
    join_guard = guard(coordinator)
    assert join_guard.under_way()
    join_guard.keep_awaited()
    assert coordinator.need_rejoin()


def test_a_join_that_finished_unawaited_is_joined_again_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llm_worker.join_guard")
    for task in (Future().success(b"assignment"), Future().failure(Exception("sync failed"))):
        coordinator = FakeCoordinator(state=MemberState.REBALANCING, _join_task=task)
        join_guard = guard(coordinator)
        assert join_guard.under_way()
        join_guard.keep_awaited()
        assert coordinator.need_rejoin()
        assert join_guard.rejoins == 1
    assert "finished while the Kafka client was not waiting" in caplog.text


def test_wait_waits_in_the_library_join_with_the_join_kept_awaited() -> None:
    coordinator = FakeCoordinator(state=MemberState.REBALANCING, _join_task=Future(), joined=False)
    join_guard = guard(coordinator)
    assert not join_guard.wait(5000)
    assert coordinator.waits == [(5000, True)]


def test_a_member_that_must_rejoin_is_under_way() -> None:
    assert guard(FakeCoordinator(rejoin_needed=True)).under_way()
    assert guard(FakeCoordinator(state=MemberState.UNJOINED, rejoin_needed=True)).under_way()


def test_a_stable_member_is_left_alone() -> None:
    for task in (None, Future().success(b"")):
        coordinator = FakeCoordinator(_join_task=task)
        join_guard = guard(coordinator)
        assert not join_guard.under_way()
        join_guard.keep_awaited()
        assert not coordinator.need_rejoin()
        assert join_guard.rejoins == 0


def test_nothing_to_wait_for_means_not_under_way() -> None:
    # ensure_active_group would return at once: waiting there would spin the loop.
    coordinator = FakeCoordinator(state=MemberState.UNJOINED)
    assert not guard(coordinator).under_way()


def test_a_consumer_without_a_coordinator_is_ignored() -> None:
    join_guard = JoinGuard(object())
    assert not join_guard.under_way()
    join_guard.keep_awaited()
    assert join_guard.wait(10)


def test_a_stable_static_member_with_heartbeats_off_was_fenced() -> None:
    """kafka-python's heartbeat thread turns heartbeats off on FENCED_INSTANCE_ID and raises nothing."""
    coordinator = FakeCoordinator()
    join_guard = guard(coordinator)
    assert not join_guard.fenced()
    coordinator._heartbeat_enabled = False
    assert join_guard.fenced()
    coordinator.rejoining = True  # a rejoin turns heartbeats off while still STABLE: not a fence
    assert not join_guard.fenced()
    coordinator.rejoining, coordinator.rejoin_needed = False, True
    assert not join_guard.fenced()
    coordinator.rejoin_needed = False
    coordinator.state = MemberState.REBALANCING  # heartbeats are off during every join: not a fence
    assert not join_guard.fenced()
    coordinator.state, coordinator.group_instance_id = MemberState.STABLE, None
    assert not join_guard.fenced()  # a dynamic member cannot be fenced
